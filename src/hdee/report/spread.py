"""How much heterogeneity: the endpoint against the size spread, with a trend test.

A strategy's spread is the ratio of its largest to its smallest expert's FLOPs per token (from the
experts' own records, the paper's count: about 1.27 for the paper's close 0.88 : 1 : 1.12, 1 for the
homogeneous strategies). For each strategy run at several spreads (`MHe-IHo`, `MHe-IHo.far`, ...;
`hdee.strategies.spreads`), the endpoint of every repeat (`hdee.report.verdict.endpoint`) is regressed on
log(spread) by ordinary least squares (statsmodels): a negative slope says more heterogeneity lowers
the loss relative to the baseline. It needs more points than parameters: two spreads and one repeat
give no test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import statsmodels.api as sm

from hdee.report.compare import kinds_of
from hdee.strategies.spreads import family
from hdee.report.verdict import endpoint


def spread_of(run: dict[str, Any], kind: str, strategy: str) -> float | None:
    experts = run["experts"]
    per_token = [experts[e]["meta"]["flops"] / experts[e]["meta"]["tokens"]
                 for e in kinds_of(run)[kind]["ensembles"][strategy]["experts"]
                 if e in experts and experts[e]["meta"].get("tokens") and experts[e]["meta"].get("flops")]
    return max(per_token) / min(per_token) if per_token else None


def spread_trends(runs: list[dict[str, Any]], kind: str, method: str, base: str, confidence: float = 0.95) -> dict[str, Any]:
    """Per strategy run at two or more spreads: each spread's endpoints and the OLS slope on log(spread)."""
    names = [s for s in kinds_of(runs[0])[kind]["ensembles"] if s != base]
    groups: dict[str, list[str]] = {}
    for s in names:
        groups.setdefault(family(s)[0], []).append(s)
    out = {}
    for fam, members in groups.items():
        spreads = {s: spread_of(runs[0], kind, s) for s in members}
        if len(members) < 2 or any(v is None for v in spreads.values()) or len(set(spreads.values())) < 2:
            continue
        x, y = [], []
        rows = []
        for s in sorted(members, key=spreads.get):
            ys = [endpoint(r, kind, method, s, base) for r in runs]
            rows.append({"strategy": s, "spread": spreads[s], "endpoints": ys})
            x += [math.log(spreads[s])] * len(ys)
            y += ys
        entry: dict[str, Any] = {"rows": rows, "points": len(y), "testable": len(y) > 2}
        if entry["testable"]:
            fit = sm.OLS(np.asarray(y), sm.add_constant(np.asarray(x))).fit()
            low, high = fit.conf_int(alpha=1 - confidence)[1]
            entry.update(slope=float(fit.params[1]), ci=[float(low), float(high)], p=float(fit.pvalues[1]), df=int(fit.df_resid))
        out[fam] = entry
    return out
