"""Where a job starts: a fresh model from its seed, or its parent expert (checked against the job's size),
and the order of its training windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from hdee.data.loaders import TrainSampler
from hdee.core.errors import CheckpointError
from hdee.core.fsutil import read_json
from hdee.model import attn_implementation, build_model, llama_config
from hdee.train import checkpoint as ckpt
from hdee.train.job import TrainJob

_ARCH_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "tie_word_embeddings",
)


def parent_record(job: TrainJob) -> dict[str, Any] | None:
    """The parent's path and weights checksum, after checking it is finished and of the job's architecture."""
    if job.parent is None:
        return None
    record = ckpt.verify_expert(job.parent)
    config = read_json(Path(job.parent) / "config.json")
    want = llama_config(job.size).to_dict() if job.size.counts is None else {  # an imported checkpoint's shape
        "vocab_size": job.size.vocab, "hidden_size": job.size.hidden, "num_hidden_layers": job.size.layers,
        "num_attention_heads": job.size.heads}
    for key in (_ARCH_KEYS if job.size.counts is None else tuple(want)):
        if config.get(key) != want.get(key):
            raise CheckpointError(
                f"{job.parent}: parent has {key}={config.get(key)}, the job's size {job.size.name or ''} needs {want.get(key)}"
            )
    return {"path": str(job.parent), "model_sha256": record["model_sha256"]}


def initial_model(job: TrainJob) -> torch.nn.Module:
    """fp32 weights: from the seed for a job without parent, else the parent's."""
    if job.parent is None:
        return build_model(job.size, job.seed)
    model = AutoModelForCausalLM.from_pretrained(job.parent, dtype=torch.float32, attn_implementation=attn_implementation())
    return model.float()


def make_sampler(job: TrainJob, tokens: list[np.ndarray], names: list[str]) -> TrainSampler:
    """The windows `job` trains on, in order: its data mix's token arrays, ordered by the job's seed."""
    return TrainSampler(tokens, job.size.seq_len, seed=job.seed, weights=[m.weight for m in job.data], names=names)
