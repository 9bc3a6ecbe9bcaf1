"""Trainer state (exact resume) and finished experts (HF dir + hdee.json), written atomically.

Trainer state lives in `<out_dir>/state/`: model and optimizer tensors and the torch RNG as
safetensors, everything else (step, sampler cursor, optimizer hyper-parameters, numpy and Python
RNG) as JSON, plus `checksums.json` over those files. It is written to a fresh directory that is
renamed over the previous one, so a crash or a full disk leaves the previous state intact.
Nothing here unpickles anything.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from transformers.utils import logging as hf_logging

from hdee.core.errors import CheckpointError
from hdee.expert_dir import RECORD, WEIGHTS, load_record, write_record
from hdee.core.fsutil import atomic_dir, plain_modes, read_json, sha256_file, write_hashed

STATE_DIR = "state"
_STATE_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


# ------------------------------------------------------------------ optimizer <-> flat tensors


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}.{name}"] = t.detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------ RNG


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def _rng_json() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    return {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_py],
    }


def _restore_rng(tensors: dict[str, torch.Tensor], js: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = js["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = js["python"]
    random.setstate((version, tuple(internal), gauss_py))


# ------------------------------------------------------------------ trainer state


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # tied weights share storage, which safetensors refuses to write twice: every entry gets its
    # own copy (the device-to-host copy is one already)
    return {k: (v.detach().cpu() if v.is_cuda else v.detach().clone()).contiguous() for k, v in model.state_dict().items()}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _disk_full_message(where: Path, exc: OSError, kept: str) -> str:
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return f"{where}: {reason} while saving; {kept}"


def save_state(out_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """Write `<out_dir>/state/` for step `info['step']`; the previous state survives any failure."""
    final = Path(out_dir) / STATE_DIR
    previous = read_state_step(out_dir)
    try:
        with atomic_dir(final) as tmp:
            opt_tensors, groups = _flatten_optimizer(optimizer)
            contents = {  # each file is hashed as it is written, never read back
                "model.safetensors": lambda: safetensors_bytes(_cpu_state(model)),
                "optimizer.safetensors": lambda: safetensors_bytes(opt_tensors),
                "rng.safetensors": lambda: safetensors_bytes(_rng_tensors()),
                "state.json": lambda: _json_bytes({**info, "optimizer_groups": groups, "rng": _rng_json()}),
            }
            sums = {name: write_hashed(tmp / name, make()) for name, make in contents.items()}
            (tmp / "checksums.json").write_bytes(_json_bytes(sums))
    except OSError as exc:
        kept = f"the checkpoint of step {previous} is kept" if previous is not None else "no earlier checkpoint exists"
        raise CheckpointError(_disk_full_message(final, exc, kept)) from None


def read_state_step(out_dir: Path) -> int | None:
    path = Path(out_dir) / STATE_DIR / "state.json"
    if not path.is_file():
        return None
    try:
        return int(read_json(path)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def load_state(out_dir: Path) -> dict[str, Any] | None:
    """The saved state (verified against its checksums), or None if there is none."""
    d = Path(out_dir) / STATE_DIR
    if not (d / "checksums.json").is_file():
        return None
    try:
        sums = read_json(d / "checksums.json")
    except ValueError:
        raise CheckpointError(f"{d / 'checksums.json'}: unreadable; delete {d} to restart") from None
    for name in _STATE_FILES:
        if not (d / name).is_file() or sha256_file(d / name) != sums.get(name):
            raise CheckpointError(f"{d / name}: trainer state is missing or corrupt (checksum mismatch); delete {d} to restart")
    info = read_json(d / "state.json")
    return {
        "info": info,
        "model": load_file(str(d / "model.safetensors")),
        "optimizer": _unflatten_optimizer(load_file(str(d / "optimizer.safetensors")), info["optimizer_groups"]),
        "rng": load_file(str(d / "rng.safetensors")),
    }


def restore_rng(state: dict[str, Any]) -> None:
    _restore_rng(state["rng"], state["info"]["rng"])


def remove_state(out_dir: Path) -> None:
    shutil.rmtree(Path(out_dir) / STATE_DIR, ignore_errors=True)


# ------------------------------------------------------------------ finished experts


def save_expert(
    out_dir: Path, model: Any, record: dict[str, Any], tokenizer: Path | None = None, max_length: int | None = None
) -> dict[str, Any]:
    """HF files first (each replaced atomically), then `hdee.json`, whose presence marks the job finished.

    With `tokenizer` (the run's tokenizer.json) the directory also gets the tokenizer files, so it
    is a self-contained HF model dir; every directory gets a model card (README.md).
    """
    from hdee.data.tokenizer import save_tokenizer_files, special_token_ids
    from hdee.model import set_special_tokens
    from hdee.modelcard import CARD_FILE, render_card

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export.", suffix=".tmp") as tmp:
            hf_logging.disable_progress_bar()  # one bar per save would drown the job's own progress
            if tokenizer is not None:
                set_special_tokens(model, special_token_ids(tokenizer))
            model.save_pretrained(tmp)
            if tokenizer is not None:
                save_tokenizer_files(tokenizer, tmp, max_length)
            (Path(tmp) / CARD_FILE).write_text(render_card(record, out_dir.name, out_dir), encoding="utf-8")
            plain_modes(tmp)
            for name in sorted(os.listdir(tmp)):
                os.replace(Path(tmp) / name, out_dir / name)
        record = write_record(out_dir, {**record, "model_sha256": sha256_file(out_dir / WEIGHTS)})
    except OSError as exc:
        raise CheckpointError(_disk_full_message(out_dir, exc, "the trainer state is kept; rerun to finish")) from None
    return record


def verify_expert(expert_dir: str | Path) -> dict[str, Any]:
    """The expert's `hdee.json`, after checking that its weights match the recorded sha256."""
    expert_dir = Path(expert_dir)
    record_path = expert_dir / RECORD
    if not expert_dir.is_dir():
        raise CheckpointError(f"{expert_dir}: expert directory not found")
    if not record_path.is_file():
        raise CheckpointError(f"{record_path}: not found; {expert_dir} is not a finished expert")
    try:
        record = load_record(expert_dir)
    except ValueError:
        raise CheckpointError(f"{record_path}: not valid JSON, or not an expert record") from None
    weights = expert_dir / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    if sha256_file(weights) != record.model_sha256:
        raise CheckpointError(f"{weights}: checksum does not match {RECORD} (corrupt or modified)")
    return record.as_dict()
