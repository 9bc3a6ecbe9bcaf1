"""What the report's top says: the regime gates (`hdee.gates`) and the pre-registered verdict
(`hdee.verdict`, `hdee.prereg`), from the saved results of a run's repeats."""

from __future__ import annotations

from typing import Any

from hdee.config import ExperimentConfig
from hdee.gates import regime_gates
from hdee.prereg import load_prereg
from hdee.spread import spread_trends
from hdee.tiers import tier_check
from hdee.verdict import clear_best, verdicts


def regime(cmp: dict[str, Any], runs: list[dict[str, Any]], seed_draws: list[dict[str, Any]],
           verdict_runs: list[dict[str, Any]], cfg: ExperimentConfig | None = None) -> dict[str, Any]:
    """`runs`: the repeats the report covers; `seed_draws`: repeat 0 and the repeats that retrain the
    seed models; `verdict_runs`: the repeats the pre-registration names (its `design.vary`)."""
    out: dict[str, Any] = {"gates": regime_gates(runs, seed_draws, cmp["method"]),
                           "tiers": tier_check(cfg, runs[0]) if cfg is not None else None}
    kind = cmp["kinds"][cmp["kind"]]
    if (clear := clear_best(runs, cmp["kind"], cmp["method"], kind["table"])) is not None:
        kind["clear_best"] = clear  # the main table bolds a domain's best only where it is clear
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
