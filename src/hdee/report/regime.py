"""What the report's top says: the regime gates (`hdee.report.gates`), the pre-registered verdict
(`hdee.report.verdict`, `hdee.report.prereg`), the tiers against measurement (`hdee.report.tiers`) and the trend across
size spreads (`hdee.report.spread`), from the saved results of a run's repeats. It also replaces the
per-domain window intervals with document intervals, and marks where each table's best is clear."""

from __future__ import annotations

from typing import Any

from hdee.config import ExperimentConfig
from hdee.report.gates import regime_gates
from hdee.report.prereg import load_prereg
from hdee.report.spread import spread_trends
from hdee.report.tiers import tier_check
from hdee.report.verdict import clear_best, document_cis, verdicts


def regime(cmp: dict[str, Any], runs: list[dict[str, Any]], seed_draws: list[dict[str, Any]],
           verdict_runs: list[dict[str, Any]], cfg: ExperimentConfig | None = None) -> dict[str, Any]:
    """`runs`: the repeats the report covers; `seed_draws`: repeat 0 and the repeats that retrain the
    seed models; `verdict_runs`: the repeats the pre-registration names (its `design.vary`)."""
    out: dict[str, Any] = {"gates": regime_gates(runs, seed_draws, cmp["method"]),
                           "tiers": tier_check(cfg, runs[0]) if cfg is not None else None}
    for name, k in cmp["kinds"].items():
        if (clear := clear_best(runs, name, k["method"], k["table"])) is not None:
            k["clear_best"] = clear  # the tables bold a domain's best only where it is clear
        # the per-domain intervals resample documents, not windows
        if k.get("window_ci") and (cis := document_cis(runs, name, k["method"], k["baseline"], list(k["window_ci"]))):
            k.update(window_ci=cis, ci_unit="documents")
    if "clear_best" in cmp["kinds"][cmp["kind"]]:  # per-document losses exist: each method's table too (repeat 0)
        cmp["per_method_clear"] = {m: clear_best(runs[:1], cmp["kind"], m, t) or set() for m, t in cmp["per_method"].items()}
    base = cmp.get("baseline")
    out["spreads"] = spread_trends(runs, cmp["kind"], cmp["method"], base) if base else {}
    loaded = load_prereg()
    if loaded is None:
        out["verdict"] = None
        return out
    pre, sha = loaded
    kinds = cmp["kinds"]
    method = kinds[pre.endpoint.ensemble]["method"] if pre.endpoint.ensemble in kinds else cmp["method"]
    out["verdict"] = verdicts(verdict_runs, len(seed_draws), method, pre, sha)
    return out
