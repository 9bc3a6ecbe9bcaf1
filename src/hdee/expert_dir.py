"""The expert-directory contract: what a finished expert's directory holds and how it is read.

    <expert>/config.json, model.safetensors   a Hugging Face causal-LM directory
    <expert>/hdee.json                        `ExpertRecord`: how it was made; written last, it marks the expert finished
    <expert>/metrics.jsonl                    one JSON object per logged step (train and validation loss)

Trained experts are written by `hdee.train`, averaged ones by `hdee.ensemble.average`; every
reader goes through this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hdee.core.errors import one_line
from hdee.core.fsutil import atomic_write_json

RECORD = "hdee.json"
WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
METRICS = "metrics.jsonl"
CARD = "README.md"  # the model card (hdee.modelcard); rewritten after evaluation, so never checksummed


class ParentRef(BaseModel):
    """The expert a branch was trained from."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())  # `model_sha256`: no warning on pydantic < 2.10

    path: str
    model_sha256: str | None = None


class ExpertRecord(BaseModel):
    """`hdee.json`. The fields readers rely on are typed; the trainer records more (budget, data,
    schedule, batch, ...), which are kept as they are."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())  # `model_sha256`: no warning on pydantic < 2.10

    kind: str | None = None  # seed | train | pilot | dense | average (a plan job's kind)
    job_id: str | None = None
    size_name: str | None = None
    domain: str | None = None  # the single training domain, else None
    domains: list[str] | None = None  # every domain its training job read
    lineage: str | None = None
    params: dict[str, int] = Field(default_factory=dict, description="parameter counts (total, non_embedding, ...)")
    iteration: int | None = None
    repeat: int | None = None
    steps: int | None = None
    tokens: int | None = None
    flops: float | None = None  # budget convention
    parent: ParentRef | None = Field(default=None, description="the expert it branched from")
    final_val_loss: float | None = None
    model_sha256: str | None = None
    tokenizer_hash: str | None = None
    source: str | None = Field(default=None, description="an imported seed's checkpoint (local dir or hub id)")

    def extra(self, key: str, default: Any = None) -> Any:
        """A recorded setting without a typed field (budget, data, schedule, meta, ...)."""
        return (self.model_extra or {}).get(key, default)

    @property
    def trained_domains(self) -> list[str]:
        """The domains the model's own training job read (none for an average)."""
        data = self.extra("data")
        if isinstance(data, list) and data:
            return [str(d["domain"]) for d in data if isinstance(d, dict) and "domain" in d]
        meta = self.extra("meta")
        domains = self.domains or (meta.get("domains") if isinstance(meta, dict) else None)
        if domains:
            return [str(d) for d in domains]
        return [self.domain] if self.domain else []

    def as_dict(self) -> dict[str, Any]:
        """The record as written (keys that were not in the file are not added)."""
        return self.model_dump(mode="json", exclude_unset=True)


def record_path(expert_dir: str | Path) -> Path:
    return Path(expert_dir) / RECORD


def weights_path(expert_dir: str | Path) -> Path:
    return Path(expert_dir) / WEIGHTS


def metrics_path(expert_dir: str | Path) -> Path:
    return Path(expert_dir) / METRICS


def is_finished(expert_dir: str | Path) -> bool:
    return record_path(expert_dir).is_file()


def load_record(expert_dir: str | Path) -> ExpertRecord:
    """The parsed `hdee.json`; FileNotFoundError when absent, ValueError when it is not a record."""
    path = record_path(expert_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError(f"{RECORD} must hold a JSON object")
    try:
        return ExpertRecord.model_validate(data)
    except ValidationError as exc:
        raise ValueError(one_line(exc)) from None


def write_record(expert_dir: str | Path, record: ExpertRecord | dict[str, Any]) -> dict[str, Any]:
    """Write `hdee.json` atomically (after checking its typed fields); returns what was written."""
    rec = record if isinstance(record, ExpertRecord) else ExpertRecord.model_validate(record)
    data = rec.as_dict()
    atomic_write_json(record_path(expert_dir), data)
    return data


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an expert's metrics (its directory or the file); a torn last line (a crash
    mid-write) and anything that is not a JSON object are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
