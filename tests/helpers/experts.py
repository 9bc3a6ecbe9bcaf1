"""Tiny HF Llama experts with an hdee.json, built in a temp dir for ensemble tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hdee.core.fsutil import sha256_file

VOCAB = 256


def make_expert(
    path: Path,
    seed: int,
    *,
    intermediate: int = 64,
    hidden: int = 32,
    layers: int = 2,
    vocab: int = VOCAB,
    tokenizer_hash: str = "tok-a",
    domain: str = "d0",
    size: str = "M",
    scale: float = 1.0,
    kind: str = "expert",
) -> Path:
    """Save a random picollama at `path`; `scale` multiplies the init std to make experts differ more."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.02 * scale,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    meta = {
        "domain": domain,
        "lineage": domain,
        "size": size,
        "steps": 1,
        "flops": 0.0,
        "kind": kind,
        "size_name": size,
        "tokenizer_hash": tokenizer_hash,
        "sha256": sha256_file(Path(path) / "model.safetensors"),
    }
    (Path(path) / "hdee.json").write_text(json.dumps(meta))
    return Path(path)


def random_windows(n: int, seq_len: int, seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(n, seq_len + 1), dtype=np.int64)
