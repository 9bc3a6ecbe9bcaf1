"""Model cards: the `README.md` with YAML front matter that every hdee model directory carries.

Hub models and mergekit outputs carry one; tools read `base_model`, `tags`, `license`,
`datasets`, `language` and `model-index` from its front matter. Everything in it is rendered
from the directory's `ExpertRecord` (`hdee.json`), which stays the source of truth, the domain
manifests it names (where each domain's text came from) and, once the run is evaluated, the
model's measured test perplexities (`refresh_card`). The card is not a checksummed output of
its job: rewriting it never makes a finished model look damaged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from hdee.data.licenses import domain_licenses, hub_license
from hdee.expert_dir import CARD, ExpertRecord, load_record
from hdee.core.fsutil import atomic_write_text

CARD_FILE = CARD
BUDGET_CONVENTION = "6 x non-embedding params x tokens"
HARDWARE_CONVENTION = "6 x (non-embedding + head) params x tokens + causal attention"


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def _meta(record: ExpertRecord) -> dict[str, Any]:
    """The plan's metadata the trainer was given (job id, parent id, config name, ...)."""
    meta = record.extra("meta")
    return meta if isinstance(meta, dict) else {}


def _kind(record: ExpertRecord) -> str:
    return str(record.kind or _meta(record).get("kind") or "model")


def _is_hub_id(source: str | None) -> bool:
    """`owner/name` that is not a local path: what the Hub's `base_model` accepts."""
    if not source or source.startswith((".", "/", "~")) or Path(source).expanduser().exists():
        return False
    parts = source.split("/")
    return len(parts) == 2 and all(parts)


def _hub_base(record: ExpertRecord, depth: int = 0) -> str | None:
    """The Hub checkpoint at the root of the model's lineage (an imported seed's hub id), if any."""
    if _is_hub_id(record.source):
        return record.source
    if record.parent is None or depth > 32:
        return None
    try:
        return _hub_base(load_record(record.parent.path), depth + 1)
    except (OSError, ValueError):
        return None


def _sources(record: ExpertRecord) -> dict[str, dict[str, Any]]:
    """Each trained domain's source, as its manifest records it ({} for a domain whose manifest is gone)."""
    out = {}
    for entry in record.extra("data") or []:
        if not isinstance(entry, dict) or "domain" not in entry:
            continue
        try:
            manifest = json.loads((Path(str(entry.get("domain_dir"))) / "manifest.json").read_text(encoding="utf-8"))
            out[str(entry["domain"])] = dict(manifest.get("source") or {})
        except (OSError, ValueError, TypeError):
            out[str(entry["domain"])] = {}
    return out


def _licenses(domains: list[str], sources: dict[str, dict[str, Any]]) -> dict[str, list[str] | None]:
    """domain -> its sources' licences (None: not an embedded domain, so unknown to hdee)."""
    out = {}
    for d in domains:
        src = sources.get(d) or {"kind": "embedded", "name": d}
        out[d] = domain_licenses(str(src.get("name", d))) if src.get("kind") == "embedded" else None
    return out


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
    if size or params.get("total"):
        rows.append(("size", f"{size or '-'}: {_millions(params.get('non_embedding'))} non-embedding, "
                             f"{_millions(params.get('total'))} parameters in all"))
    if record.steps is not None:
        rows.append(("steps", f"{record.steps:,}"))
    seq_len = _context(record)
    if seq_len:
        rows.append(("context length", f"{seq_len} tokens (trained on windows of this length; longer text is out of range)"))
    if record.flops is not None:
        rows.append(("training FLOPs, paper count", f"{record.flops:.3g} ({record.extra('flops_convention') or BUDGET_CONVENTION})"))
    if record.extra("flops_full") is not None:
        rows.append(("training FLOPs, hardware count", f"{record.extra('flops_full'):.3g} "
                     f"({record.extra('flops_full_convention') or HARDWARE_CONVENTION}; the count `hdee plan` shows by default)"))
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


def _context(record: ExpertRecord) -> int | None:
    size = record.extra("size")
    return int(size["seq_len"]) if isinstance(size, dict) and size.get("seq_len") else None


def _metadata(record: ExpertRecord, name: str, kind: str, domains: list[str],
              licenses: dict[str, list[str] | None], sources: dict[str, dict[str, Any]],
              perplexities: dict[str, float] | None) -> ModelCardData:
    every = [lic for lics in licenses.values() for lic in (lics or [])]
    known = bool(licenses) and all(v is not None for v in licenses.values())
    lic = hub_license(every) if known and every else "other"
    datasets = sorted({str(s["path"]) for s in sources.values() if s.get("kind") == "hf" and s.get("path")})
    embedded_only = bool(domains) and all((sources.get(d) or {"kind": "embedded"}).get("kind") == "embedded" for d in domains)
    results = [
        EvalResult(task_type="text-generation", task_name="Language modelling", dataset_type=d, dataset_name=d,
                   dataset_split="test", metric_type="perplexity", metric_name="test perplexity", metric_value=round(float(v), 4))
        for d, v in sorted((perplexities or {}).items())
    ]
    return ModelCardData(
        base_model=_hub_base(record),
        license=lic,
        license_name=None if lic != "other" else (every[0].lower().replace(" ", "-") if len(set(every)) == 1 else "mixed-sources"),
        language=["en"] if embedded_only else None,
        datasets=datasets or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hdee", "domain-expert", kind, *domains],
        model_name=name if results else None,
        eval_results=results or None,
    )


def _license_lines(licenses: dict[str, list[str] | None]) -> list[str]:
    if not licenses:
        return ["No training domains are recorded; see the models it was made from."]
    lines = ["Training text and its licences (the model may reproduce it):", ""]
    for d, lics in licenses.items():
        lines.append(f"- `{d}`: " + (", ".join(lics) if lics else "not an embedded domain: see its source's own terms"))
    return lines


def render_card(record: ExpertRecord | dict[str, Any], name: str, path: str | Path | None = None,
                perplexities: dict[str, float] | None = None) -> str:
    """The card text for the model directory `name` (at `path`) holding `record` (its hdee.json),
    with the model's measured test perplexity on each domain when given."""
    record = record if isinstance(record, ExpertRecord) else ExpertRecord.model_validate(record)
    kind = _kind(record)
    domains = record.trained_domains
    sources = _sources(record)
    licenses = _licenses(domains, sources)
    data = _metadata(record, name, kind, domains, licenses, sources, perplexities)
    where = str(Path(path).resolve()) if path is not None else name
    seq_len = _context(record)
    lines = [
        "---",
        data.to_yaml().strip(),
        "---",
        "",
        f"# {name}",
        "",
        f"{_what(record, kind)}, written by hdee (heterogeneous domain-expert ensembles, after HDEE, "
        "Ersoy, Kolehmainen and Passamani Andrade, 2025).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in _rows(record, kind, domains)),
        "",
    ]
    if perplexities:
        lines += ["Measured test perplexity (the run's held-out test split of each domain, windows of the context length):", "",
                  "| domain | perplexity |", "|---|---|", *(f"| {d} | {v:.3f} |" for d, v in sorted(perplexities.items())), ""]
    lines += [
        "## Intended use",
        "",
        "Research on domain-expert ensembles: a member of an hdee ensemble (mixed with the others by `hdee eval`,",
        "`hdee generate` or `hdee lm-eval`), or a small causal LM for experiments on its own domains.",
        "",
        "## Limitations",
        "",
        "- Trained for its domains only (table above): expect poor text elsewhere. Not instruction-tuned.",
        f"- A context of {seq_len or 'the trained'} tokens; its position embeddings were never trained past it.",
        "- No safety tuning or filtering beyond the de-duplication of its evaluation splits.",
        "",
        *_license_lines(licenses),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        f'generate = pipeline("text-generation", model="{where}")',
        f'print(generate("def ", max_new_tokens={min(32, seq_len or 32)})[0]["generated_text"])',
        "```",
        "",
        "Generation stops at the end-of-text token (the one between training documents; also the padding token).",
        "Every number above comes from `hdee.json` in this directory" + (" and the run's results." if perplexities else "."),
        "",
    ]
    return "\n".join(lines)


def refresh_card(expert_dir: str | Path, perplexities: dict[str, float]) -> None:
    """Rewrite a finished model's card with its measured test perplexities (model-index)."""
    expert_dir = Path(expert_dir)
    text = render_card(load_record(expert_dir), expert_dir.name, expert_dir, perplexities)
    path = expert_dir / CARD_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != text:  # unchanged cards are left alone
        atomic_write_text(path, text)
