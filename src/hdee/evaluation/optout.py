"""Expert opt-out: every ensemble re-evaluated with some experts removed, from cached scores only.

A data owner who leaves takes the experts trained on their domain with them. Removing an
expert from an ensemble needs no retraining and no forward pass: the cached per-token scores of
the experts that stay are mixed again. Methods that need the models themselves (`product`) are
left out.

What opt-out does not remove: the seed models were trained on every training domain, and an
expert of a later iteration inherits the weights of the lineage's earlier experts, so the
leaving domain's data still shaped every model that stays.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hdee.core.errors import ConfigError
from hdee.core.fsutil import read_json
from hdee.ensemble.experts import read_expert
from hdee.evaluation.evaluate import EnsembleSpec, evaluate
from hdee.registry import MIXING_METHODS
from hdee.report.compare import NOT_REMOVED

if TYPE_CHECKING:
    from hdee.run import Run


def trained_on(expert_dir: str | Path) -> list[str]:
    """The domains a model's own training job read (from its hdee.json)."""
    return read_expert(expert_dir).record.trained_domains


def removed_experts(run: "Run", targets: list[str]) -> dict[str, list[str]]:
    """target -> the ensemble members it removes: an expert id itself, or every member trained on a domain."""
    members = sorted({e for spec in run.ensembles.values() for e in spec.experts})
    out: dict[str, list[str]] = {}
    for target in targets:
        if target in run.experts:
            out[target] = [target]
        elif target in run.cfg.train_domains:
            out[target] = [e for e in members if target in trained_on(run.experts[e])]
        else:
            known = "an expert id of plan.json or a training domain (" + ", ".join(run.cfg.train_domains) + ")"
            raise ConfigError(f"--without {target!r}: not {known}")
    return out


def opt_out(run: "Run", targets: list[str], progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Results with `targets` removed from every ensemble, written to results/without-<targets>.json.

    Ensembles left with no expert are listed under `emptied`; the models removed stay out of
    `experts` too. Cached scores are reused; nothing is trained.
    """
    removed = removed_experts(run, targets)
    gone = {e for ids in removed.values() for e in ids}
    ensembles: dict[str, EnsembleSpec] = {}
    emptied = []
    for name, spec in run.ensembles.items():
        kept = [e for e in spec.experts if e not in gone]
        if kept:
            ensembles[name] = EnsembleSpec(kept, {**spec.meta, "removed": [e for e in spec.experts if e in gone]})
        else:
            emptied.append(name)
    if not ensembles:
        raise ConfigError(f"--without {', '.join(targets)} removes every expert of every ensemble")
    methods = [m for m in run.cfg.eval.methods if MIXING_METHODS.get(m).cached]
    cfg = run.cfg.model_copy(update={"eval": run.cfg.eval.model_copy(update={"methods": methods})})
    experts = {e: d for e, d in run.experts.items() if e not in gone}
    extra = {"without": removed, "emptied": emptied, "not_removed": NOT_REMOVED}
    return evaluate(cfg, run.layout, experts, ensembles, results_path=results_path(run, targets),
                    progress=progress, extra=extra)


def results_path(run: "Run", targets: list[str]) -> Path:
    """Where `opt_out(run, targets)` writes its results."""
    return run.layout.opt_out_path(re.sub(r"[^A-Za-z0-9_.-]+", "_", "+".join(targets)))


def against_whole(run: "Run", res: dict[str, Any]) -> tuple[str, dict[str, dict[str, tuple[float, float | None] | None]]]:
    """(method, {domain: {ensemble: (perplexity without, relative change or None) or None when emptied}}).

    The method is the run's own main method when the opt-out results have it; the change compares
    with the whole ensemble's perplexity in the run's results.json (None when it has none).
    """
    full = read_json(run.layout.results_json) if run.layout.results_json.is_file() else {}
    run_method = (full.get("method_choice") or {}).get("method")
    method = run_method if run_method in res["methods"] else res["method_choice"]["method"]
    names = [*res["ensembles"], *res["emptied"]]
    rows: dict[str, dict[str, tuple[float, float | None] | None]] = {}
    for d in (x["name"] for x in res["domains"]):
        rows[d] = {}
        for name in names:
            if name not in res["ensembles"]:
                rows[d][name] = None
                continue
            v = res["ensembles"][name]["ppl"][method][d]
            base = full.get("ensembles", {}).get(name, {}).get("ppl", {}).get(method, {}).get(d)
            rows[d][name] = (v, v / base - 1 if base else None)
    return method, rows
