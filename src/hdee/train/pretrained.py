"""Seed models from existing checkpoints: an HF causal LM (local dir or hub id) becomes a run's seed.

The checkpoint is loaded in fp32 and written as an hdee model dir (weights, config, the run's
tokenizer, model card, hdee.json with the source and exact parameter counts). A checkpoint
trained elsewhere costs the run no FLOPs; one that hdee trained (an entry of the seed cache,
hdee.train.seed_cache) keeps the steps, tokens and FLOPs its training cost. Its validation loss on the
seed domains is measured, as a trained seed's is, so `auto` can compare sizes. Experts then
branch from it like from any seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdee.data.loaders import eval_windows
from hdee.core.errors import CheckpointError, DataError
from hdee.expert_dir import is_finished
from hdee.model import SizeSpec, param_counts
from hdee.train import checkpoint as ckpt
from hdee.train.domains import open_domain
from hdee.train.loss import compute_loss


def _check_tokenizer(source: str, tokenizer: Path) -> None:
    """The run's tokenizer must be the checkpoint's own (when the checkpoint ships one)."""
    from tokenizers import Tokenizer

    local = Path(source).expanduser() / "tokenizer.json"
    if not local.is_file():
        return
    theirs, ours = Tokenizer.from_file(str(local)).get_vocab(), Tokenizer.from_file(str(tokenizer)).get_vocab()
    if theirs != ours:
        raise DataError(f"{local}: its vocabulary differs from the run's tokenizer {tokenizer}; seeds and data must share one")


def _trained_cost(source: str) -> dict[str, Any]:
    """What training an hdee-trained source cost (a seed from the seed cache): its steps, tokens, FLOPs
    and its own record's checksum; nothing for a checkpoint trained elsewhere."""
    from hdee.expert_dir import RECORD
    from hdee.core.fsutil import read_json, sha256_file

    path = Path(source).expanduser() / RECORD
    if not path.is_file():
        return {}
    rec = read_json(path)
    keys = ("steps", "tokens", "flops", "flops_convention", "flops_full", "flops_full_convention")
    return {**{k: rec[k] for k in keys if k in rec},
            "trained": {"record_sha256": sha256_file(path), "model_sha256": rec.get("model_sha256"),
                        "val_loss_when_trained": rec.get("final_val_loss"), "seed": rec.get("seed")}}


@torch.inference_mode()
def _val_loss(model: torch.nn.Module, spec: SizeSpec, val_dirs: list[Path], tokenizer_hash: str | None, eval_tokens: int) -> float | None:
    if not val_dirs:
        return None
    per = max(spec.seq_len, eval_tokens // len(val_dirs))
    windows = np.concatenate([
        eval_windows(open_domain(d, "val", spec.vocab, tokenizer_hash).tokens, spec.seq_len, per) for d in val_dirs
    ])
    total = count = 0.0
    for i in range(0, len(windows), 8):
        x = torch.from_numpy(windows[i:i + 8])
        total += float(compute_loss(model, x)) * x[:, 1:].numel()
        count += x[:, 1:].numel()
    return total / count if count else None


def import_seed(
    source: str,
    out_dir: Path,
    spec: SizeSpec,
    *,
    tokenizer: Path,
    tokenizer_hash: str | None,
    val_dirs: list[Path],
    eval_tokens: int,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write the checkpoint `source` as the seed model dir `out_dir`; a finished one is verified and returned."""
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    if is_finished(out_dir):
        record = ckpt.verify_expert(out_dir)
        theirs = (record.get("job_id"), record.get("source"), record.get("size_name"))
        mine = (meta.get("job_id"), source, spec.name)
        if any(a is not None and b is not None and a != b for a, b in zip(theirs, mine)):
            raise CheckpointError(f"{out_dir}: holds a finished seed of another job (job {theirs[0]}, from {theirs[1]!r}, "
                                  f"size {theirs[2]}; this job: {mine[0]}, {mine[1]!r}, {mine[2]}); move it away or delete it")
        return record
    _check_tokenizer(source, tokenizer)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"seed checkpoint {source!r}: cannot load ({first})") from None
    model.eval()
    trained = _trained_cost(source)
    if int(model.config.vocab_size) != spec.vocab:
        raise CheckpointError(f"seed checkpoint {source!r} changed since the plan: vocab {model.config.vocab_size}, planned {spec.vocab}")
    record = {
        **meta,
        "format": 1,
        "meta": meta,
        "source": source,
        "size": spec.model_dump(mode="json"),
        "size_name": spec.name,
        "params": param_counts(spec),
        "steps": 0,
        "tokens": 0,
        "flops": 0.0,
        "flops_convention": "6 x non-embedding params x tokens (imported: not trained here)",
        **trained,
        "parent": None,
        "tokenizer_hash": tokenizer_hash,
        "val_domains": [Path(d).name for d in val_dirs],
        "final_val_loss": _val_loss(model, spec, val_dirs, tokenizer_hash, eval_tokens),
    }
    return ckpt.save_expert(out_dir, model, record, tokenizer, spec.seq_len)
