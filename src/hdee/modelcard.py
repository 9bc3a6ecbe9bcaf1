"""Model cards: the `README.md` with YAML front matter that every hdee model directory carries.

Hub models and mergekit outputs carry one; tools read `base_model`, `tags` and
`library_name` from its front matter. Everything in it is rendered from the directory's
`ExpertRecord` (`hdee.json`), which stays the source of truth.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCardData

from hdee.expert_dir import ExpertRecord

CARD_FILE = "README.md"
BUDGET_CONVENTION = "6 x non-embedding params x tokens"


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def _meta(record: ExpertRecord) -> dict[str, Any]:
    """The plan's metadata the trainer was given (job id, parent id, config name, ...)."""
    meta = record.extra("meta")
    return meta if isinstance(meta, dict) else {}


def _kind(record: ExpertRecord) -> str:
    return str(record.kind or _meta(record).get("kind") or "model")


def _base_model(record: ExpertRecord) -> str | list[str] | None:
    """The parent: its job id (a sibling directory), a hub id or path for imported seeds, or the averaged parents."""
    if record.kind == "average":
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in record.extra("parents") or []] or None
    parent_id = _meta(record).get("parent_id")
    if parent_id:
        return str(parent_id)
    if record.source:
        return record.source
    if record.parent is not None:
        return record.parent.path.rstrip("/").rsplit("/", 1)[-1]
    return None


def _what(record: ExpertRecord, kind: str) -> str:
    if kind == "seed":
        return "Seed model (imported checkpoint)" if record.source else "Seed model, trained from scratch"
    if kind == "train":
        return f"Domain expert of lineage `{record.lineage}`, iteration {record.iteration}"
    if kind == "dense":
        return "Dense model on the union of the training domains (the compute-matched baseline)"
    if kind == "pilot":
        return "Pilot run (a short measurement of one domain)"
    if kind == "average":
        return "Parameter average of hdee experts"
    return f"hdee model ({kind})"


def _rows(record: ExpertRecord, kind: str, domains: list[str]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [("kind", kind)]
    config = record.extra("config") or _meta(record).get("config")
    if config:
        rows.append(("experiment config", f"`{config}`"))
    if domains:
        per = f" ({record.tokens:,} tokens in all)" if record.tokens is not None else ""
        rows.append(("domains", ", ".join(domains) + per))
    params = record.params
    size = record.size_name or record.extra("size")
    if isinstance(size, dict):
        size = size.get("name")
    if size or params:
        rows.append(("size", f"{size or '-'}: {_millions(params.get('non_embedding'))} non-embedding, "
                             f"{_millions(params.get('total'))} parameters in all"))
    if record.steps is not None:
        rows.append(("steps", f"{record.steps:,}"))
    if record.flops is not None:
        rows.append(("training FLOPs", f"{record.flops:.3g} ({record.extra('flops_convention') or BUDGET_CONVENTION})"))
    base = _base_model(record)
    if base:
        rows.append(("parents" if kind == "average" else "branched from", ", ".join(base) if isinstance(base, list) else base))
    if kind == "average" and record.extra("weights"):
        rows.append(("averaging weights", ", ".join(f"{w:.4g}" for w in record.extra("weights"))))
    if record.final_val_loss is not None:
        rows.append(("final validation loss", f"{record.final_val_loss:.4f} nats/token"))
    if record.tokenizer_hash:
        rows.append(("tokenizer sha256", f"`{record.tokenizer_hash}` (`tokenizer.json`)"))
    return rows


def render_card(record: ExpertRecord | dict[str, Any], name: str) -> str:
    """The card text for the model directory `name` holding `record` (its hdee.json)."""
    record = record if isinstance(record, ExpertRecord) else ExpertRecord.model_validate(record)
    kind = _kind(record)
    domains = record.trained_domains
    data = ModelCardData(
        base_model=_base_model(record),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hdee", "domain-expert", kind, *domains],
    )
    lines = [
        "---",
        data.to_yaml().strip(),
        "---",
        "",
        f"# {name}",
        "",
        f"{_what(record, kind)}, written by hdee.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in _rows(record, kind, domains)),
        "",
        "```python",
        "from transformers import pipeline",
        f'generate = pipeline("text-generation", model="{name}")',
        "```",
        "",
        "Every number above comes from `hdee.json` in this directory.",
        "",
    ]
    return "\n".join(lines)
