"""Expert directories as the ensemble reads them (the contract is hdee.expert_dir's): metadata
without weights, compatibility checks, and the model itself."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hdee.core.errors import EnsembleError
from hdee.expert_dir import HF_CONFIG, RECORD, ExpertRecord, load_record, weights_path
from hdee.core.fsutil import sha256_file_cached


@dataclass(frozen=True)
class ExpertInfo:
    """What the ensemble needs to know about one expert, read without loading its weights."""

    path: Path
    record: ExpertRecord = field(default_factory=ExpertRecord)
    config: dict[str, Any] = field(default_factory=dict)  # the HF config.json

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tokenizer_hash(self) -> str | None:
        return self.record.tokenizer_hash

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def weights_sha256(self) -> str:
        """The weights' checksum recorded in hdee.json.

        Experts record it as `model_sha256`; older averaged ones only as `sha256`.
        """
        recorded = self.record.model_sha256 or (self.record.model_extra or {}).get("sha256")
        if not isinstance(recorded, str) or not recorded:
            raise EnsembleError(f"{self.path / RECORD}: records no checksum of {weights_path(self.path).name}")
        return recorded

    def verify(self) -> None:
        """The weights file still has the recorded checksum (hashed once per process per file version)."""
        weights = weights_path(self.path)
        if sha256_file_cached(weights) != self.weights_sha256():
            raise EnsembleError(f"{weights}: checksum does not match {RECORD} (corrupt, truncated or modified)")


def read_expert(expert_dir: str | Path) -> ExpertInfo:
    """Read config.json and hdee.json of one expert and verify its weights' checksum;
    one-line EnsembleError when it is not an intact expert."""
    path = Path(expert_dir)
    if not path.is_dir():
        raise EnsembleError(f"{path}: expert directory not found")
    try:
        config = json.loads((path / HF_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EnsembleError(f"{path}: not an expert directory (no {HF_CONFIG})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"{path / HF_CONFIG}: unreadable {HF_CONFIG}: {exc}") from None
    if not isinstance(config, dict):
        raise EnsembleError(f"{path / HF_CONFIG}: {HF_CONFIG} must hold a JSON object")
    try:
        record = load_record(path)
    except FileNotFoundError:
        raise EnsembleError(f"{path}: not an expert directory (no {RECORD})") from None
    except ValueError as exc:
        raise EnsembleError(f"{path / RECORD}: unreadable {RECORD}: {exc}") from None
    if not weights_path(path).is_file():
        raise EnsembleError(f"{path}: no {weights_path(path).name}")
    if "vocab_size" not in config:
        raise EnsembleError(f"{path / HF_CONFIG}: no vocab_size")
    info = ExpertInfo(path=path, record=record, config=config)
    info.verify()
    return info


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
    """The expert as an fp32 HF causal LM in eval mode, after verifying its weights' checksum."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per expert load would drown evaluation logs

    read_expert(expert_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(expert_dir), dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - torch, safetensors and transformers raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EnsembleError(f"{expert_dir}: cannot load model: {first}") from None
    model.eval()
    return model
