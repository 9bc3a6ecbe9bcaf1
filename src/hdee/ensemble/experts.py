"""Expert directories: an HF causal-LM dir (config.json + model.safetensors) with hdee.json beside it."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from hdee.errors import EnsembleError
from hdee.fsutil import sha256_file

WEIGHTS_FILE = "model.safetensors"
META_FILE = "hdee.json"


@dataclass(frozen=True)
class ExpertInfo:
    """What the ensemble needs to know about one expert, read without loading its weights."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tokenizer_hash(self) -> str | None:
        return self.meta.get("tokenizer_hash")

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def weights_sha256(self) -> str:
        """The checksum recorded in hdee.json, else computed from the weights file (memoised).

        Trained experts record it as `model_sha256` (hdee.train.checkpoint), averaged ones as `sha256`.
        """
        for key in ("model_sha256", "sha256"):
            if self.meta.get(key):
                return str(self.meta[key])
        weights = self.path / WEIGHTS_FILE
        st = weights.stat()
        return _file_sha256(str(weights.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, recomputed only when its path, mtime or size changes."""
    return sha256_file(path)


def _read_json_file(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnsembleError(f"{path.parent}: not an expert directory (no {what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"{path}: unreadable {what}: {exc}") from None
    if not isinstance(data, dict):
        raise EnsembleError(f"{path}: {what} must hold a JSON object")
    return data


def read_expert(expert_dir: str | Path) -> ExpertInfo:
    """Read config.json and hdee.json of one expert; one-line EnsembleError when it is not one."""
    path = Path(expert_dir)
    if not path.is_dir():
        raise EnsembleError(f"{path}: expert directory not found")
    config = _read_json_file(path / "config.json", "config.json")
    meta = _read_json_file(path / META_FILE, META_FILE)
    if not (path / WEIGHTS_FILE).is_file():
        raise EnsembleError(f"{path}: no {WEIGHTS_FILE}")
    if "vocab_size" not in config:
        raise EnsembleError(f"{path / 'config.json'}: no vocab_size")
    return ExpertInfo(path=path, meta=meta, config=config)


def check_compatible(infos: list[ExpertInfo]) -> None:
    """All experts must share one tokenizer (hdee.json tokenizer_hash) and one vocabulary size.

    The odd expert is the first one that differs from the most common value.
    """
    if not infos:
        raise EnsembleError("an ensemble needs at least one expert")
    for attr, what in (("tokenizer_hash", "tokenizer_hash"), ("vocab_size", "vocab_size")):
        values = [getattr(i, attr) for i in infos]
        counts = Counter(values)
        top = max(counts.values())
        common = next(v for v in values if counts[v] == top)
        for info, value in zip(infos, values):
            if value != common:
                raise EnsembleError(
                    f"{info.path}: {what} {value!r} differs from the other experts' {common!r}"
                )


def load_model(expert_dir: str | Path) -> torch.nn.Module:
    """The expert as an fp32 HF causal LM in eval mode."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per expert load would drown evaluation logs

    try:
        model = AutoModelForCausalLM.from_pretrained(str(expert_dir), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EnsembleError(f"{expert_dir}: cannot load model: {first}") from None
    model.eval()
    return model
