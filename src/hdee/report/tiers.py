"""Tiers from measurement: each lineage's measured return per step against its hand-set tier.

A lineage's return is what its experts gained on their own domain per optimizer step: the parent's
validation log-perplexity minus the expert's, divided by the expert's steps, averaged over every
trained expert of the lineage (all strategies). The hand-set tiers, ordered by the compute the
config gives them (`hdee.strategies.tier_order`), are dealt out again by that return: the
lineage that gains least per step gets the tier with the least compute. The report says whether
the two assignments agree.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from hdee.config import ExperimentConfig
from hdee.strategies.tier_order import deal_tiers


def lineage_returns(run: dict[str, Any]) -> dict[str, float]:
    experts = run["experts"]
    per: dict[str, list[float]] = {}
    for e in experts.values():
        meta = e["meta"]
        parent = experts.get(Path((meta.get("parent") or {}).get("path") or "-").name)
        dom, steps = meta.get("domain"), meta.get("steps")
        if meta.get("kind") != "train" or parent is None or not steps or not meta.get("lineage"):
            continue
        mine, theirs = e.get("val_ppl", {}).get(dom), parent.get("val_ppl", {}).get(dom)
        if mine is not None and theirs is not None and math.isfinite(mine) and math.isfinite(theirs):
            per.setdefault(meta["lineage"], []).append((math.log(theirs) - math.log(mine)) / steps)
    return {lin: statistics.fmean(v) for lin, v in per.items()}


def measured_tiers(cfg: ExperimentConfig, returns: dict[str, float]) -> dict[str, str] | None:
    """lineage -> tier dealt by measured return (least return, least compute); None unless every
    lineage was measured."""
    lineages = [lin for lin in cfg.lineages]
    if any(lin.name not in returns for lin in lineages):
        return None
    return deal_tiers(cfg, returns)


def tier_check(cfg: ExperimentConfig, run: dict[str, Any]) -> dict[str, Any] | None:
    returns = lineage_returns(run)
    measured = measured_tiers(cfg, returns)
    if measured is None:
        return None
    rows = [{"lineage": lin.name, "hand": lin.tier, "return": returns[lin.name], "measured": measured[lin.name]}
            for lin in cfg.lineages]
    return {"rows": rows, "agree": all(r["hand"] == r["measured"] for r in rows)}
