"""The primary endpoint's statistics: a paired t interval, the two one-sided tests (TOST) of
equivalence, a bootstrap over whole documents, and the repeats a margin needs (power).

Differences are strategy minus baseline in log-perplexity (nats/token); negative is better.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps


def t_interval(diffs: list[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """(mean, low, high): the t interval of the mean paired difference; None below 2 values."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return None
    mean = float(d.mean())
    if np.ptp(d) == 0:
        return mean, mean, mean
    low, high = sps.t.interval(confidence, len(d) - 1, loc=mean, scale=sps.sem(d))
    return mean, float(low), float(high)


def tost(diffs: list[float], margin: float) -> float | None:
    """p-value of the two one-sided t-tests that the mean difference lies within (-margin, margin):
    the larger of the two one-sided p-values; small = equivalent. None below 2 values."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return None
    if np.ptp(d) == 0:
        return 0.0 if abs(d[0]) < margin else 1.0
    p_low = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
    p_high = sps.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(p_low, p_high))


def document_bootstrap(domains: list[tuple[np.ndarray, np.ndarray, np.ndarray]], confidence: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean over domains of the per-token loss difference, resampling whole
    documents within each domain (a stratified percentile bootstrap; scipy's `bootstrap` resamples
    one sample, not several strata of different sizes).

    Each domain is (strategy's summed loss per document, baseline's, tokens per document)."""
    rng = np.random.default_rng(seed)
    point, draws = [], np.zeros(resamples)
    for a, b, n in domains:
        a, b, n = (np.asarray(x, dtype=np.float64) for x in (a, b, n))
        point.append((a.sum() - b.sum()) / n.sum())
        idx = rng.integers(0, len(n), size=(resamples, len(n)))
        draws += (a[idx].sum(1) - b[idx].sum(1)) / n[idx].sum(1)
    draws /= len(domains)
    tail = (1 - confidence) / 2
    return float(np.mean(point)), float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def tost_power(n: int, sd: float, margin: float, alpha: float = 0.05) -> float:
    """Power of the paired TOST with n repeats when the true difference is 0 and its spread is `sd`
    (normal approximation with the t critical value: each one-sided test must clear the margin)."""
    if n < 2:
        return 0.0
    if sd == 0:
        return 1.0
    t = sps.t.ppf(1 - alpha, n - 1)
    z = margin / (sd / math.sqrt(n)) - t
    return max(0.0, 2 * sps.norm.cdf(z) - 1)


def needed_repeats(sd: float, margin: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> int:
    """The fewest repeats for which the TOST has `power` to show equivalence within `margin` when the
    strategies are equal, given the endpoint's spread `sd` over repeats (measured on validation pilots)."""
    if margin <= 0 or sd < 0:
        raise ValueError("margin must be > 0 and sd >= 0")
    for n in range(2, most + 1):
        if tost_power(n, sd, margin, alpha) >= power:
            return n
    return most
