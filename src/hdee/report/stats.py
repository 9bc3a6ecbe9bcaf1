"""The statistics behind the comparison's claims, from per-repeat tables and per-window losses.

* Wins against the baseline, per strategy, beside the rate chance alone gives (one half when two
  strategies are equal) and a sign test (scipy `binomtest`).
* Training noise: a paired t-test over repeats of each (strategy, domain) log-perplexity
  difference to the baseline (scipy `ttest_rel`, two-sided, with the t critical value), Holm-
  corrected over every strategy and domain together (statsmodels `multipletests`).
* Test-window noise: a bootstrap over the test windows of each domain (scipy `bootstrap`,
  percentile interval) of the mean per-token loss difference to the baseline. Windows of one
  document are not independent, so these intervals are, if anything, too narrow.

Differences are strategy minus baseline in log-perplexity (nats/token): negative is better.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05  # family-wise error rate of the Holm-corrected tests, and 1 - the bootstrap's confidence
RESAMPLES = 2000  # bootstrap resamples per interval
SEED = 0  # the bootstrap's generator: the same results give the same intervals


def wins_against(table: Mapping[str, Mapping[str, float]], base: str, others: list[str], domains: list[str]) -> dict[str, dict[str, Any]]:
    """Per strategy: in how many domains it is lower than `base`, the count chance alone gives if
    the two were equal (half of the domains where they differ), and a one-sided sign test."""
    out = {}
    for s in others:
        lower = [d for d in domains if table[s][d] < table[base][d] and not math.isclose(table[s][d], table[base][d], rel_tol=1e-12)]
        ties = [d for d in domains if math.isclose(table[s][d], table[base][d], rel_tol=1e-12)]
        n = len(domains) - len(ties)
        p = float(sps.binomtest(len(lower), n, 0.5, alternative="greater").pvalue) if n else 1.0
        out[s] = {"wins": len(lower), "ties": len(ties), "of": len(domains), "chance": n / 2, "sign_p": p, "domains": lower}
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(t, two-sided p, df) of the paired t-test of a against b; a constant difference is exact."""
    diff = a - b
    df = len(diff) - 1
    if np.ptp(diff) == 0:  # no spread: either no difference at all, or one the repeats never vary
        return (0.0, 1.0, df) if diff[0] == 0 else (math.copysign(math.inf, diff[0]), 0.0, df)
    res = sps.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue), df


def paired_tests(
    tables: list[Mapping[str, Mapping[str, float]]], base: str, others: list[str], domains: list[str]
) -> dict[str, Any]:
    """Paired t-tests over repeats of log(ppl_s) - log(ppl_base), Holm-corrected over every
    (strategy, domain); and one test per strategy of the mean over domains, Holm over strategies.

    Needs at least 2 repeats (None otherwise): with one repeat there is no training noise to test.
    """
    n = len(tables)
    if n < 2 or not others:
        return {"repeats": n, "cells": None, "overall": None}
    t_crit = float(sps.t.ppf(1 - ALPHA / 2, n - 1))

    def logs(s: str, d: str) -> np.ndarray:
        return np.log([t[s][d] for t in tables])

    cells = []
    for s in others:
        for d in domains:
            a, b = logs(s, d), logs(base, d)
            t, p, df = _paired(a, b)
            cells.append({"strategy": s, "domain": d, "diff": float(np.mean(a - b)), "t": t, "p": p})
    _holm(cells)
    overall = []
    for s in others:
        a = np.array([np.mean([math.log(t[s][d]) for d in domains]) for t in tables])
        b = np.array([np.mean([math.log(t[base][d]) for d in domains]) for t in tables])
        t, p, df = _paired(a, b)
        overall.append({"strategy": s, "diff": float(np.mean(a - b)), "t": t, "p": p})
    _holm(overall)
    return {"repeats": n, "df": n - 1, "t_crit": t_crit, "alpha": ALPHA, "family": len(cells), "cells": cells, "overall": overall}


def _holm(rows: list[dict[str, Any]]) -> None:
    """Add Holm-adjusted p-values and whether each row is significant at ALPHA (family = rows)."""
    if not rows:
        return
    reject, adjusted, _, _ = multipletests([r["p"] for r in rows], alpha=ALPHA, method="holm")
    for r, rej, adj in zip(rows, reject, adjusted):
        r["p_holm"] = float(adj)
        r["significant"] = bool(rej)


def bootstrap_ci(diff: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-window loss differences with its percentile interval."""
    diff = np.asarray(diff, dtype=np.float64)
    mean = float(diff.mean())
    if len(diff) < 2 or np.ptp(diff) == 0:
        return mean, mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.bootstrap(
            (diff,), np.mean, n_resamples=RESAMPLES, confidence_level=1 - ALPHA, method="percentile",
            vectorized=True, rng=np.random.default_rng(SEED),
        )
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def window_cis(
    window_nll: list[Mapping[str, Mapping[str, list[float]]]], base: str, others: list[str], domains: list[str]
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per (strategy, domain): the bootstrap interval over test windows of the loss difference to
    `base`, each window's loss averaged over the repeats first (`window_nll[repeat][strategy][domain]`)."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for s in others:
        out[s] = {}
        for d in domains:
            per_repeat = [np.asarray(r[s][d]) - np.asarray(r[base][d]) for r in window_nll]
            out[s][d] = bootstrap_ci(np.mean(per_repeat, axis=0))
    return out
