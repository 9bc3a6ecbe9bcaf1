"""Mixing methods on cached per-token log-probabilities.

Input everywhere: `lp[k, i, t] = log p_k(x_{i,t+1} | x_{i,<=t})`, the log-probability expert k
gave the true next token at position t of window i (float [K, n, T]). Output: the mixture's
log-probability of the same tokens, float64 [n, T]. Everything stays in log space.
Formulas are written with x_t for the token predicted at position t; see docs/ensembling.md.
`product` needs full distributions and lives in hdee.ensemble.product. The methods are
registered by name in hdee.ensemble.methods.
"""

from __future__ import annotations

import numpy as np

from hdee.core.errors import EnsembleError
from hdee.registry import MIXING_METHODS


def logsumexp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """log(sum(exp(a))) along `axis`, stable, with -inf entries allowed."""
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _as_lp(lp: np.ndarray) -> np.ndarray:
    lp = np.asarray(lp, dtype=np.float64)
    if lp.ndim != 3 or lp.shape[0] < 1:
        raise EnsembleError(f"log-probs must be [K >= 1, windows, seq_len], got {list(lp.shape)}")
    return lp


def _log_prior(log_prior: np.ndarray | None, k: int) -> np.ndarray:
    if log_prior is None:
        return np.full(k, -np.log(k))
    lp = np.asarray(log_prior, dtype=np.float64)
    if lp.shape != (k,):
        raise EnsembleError(f"prior has {lp.size} weights for {k} experts")
    return lp - logsumexp(lp, 0)


def normalise(log_w: np.ndarray) -> np.ndarray:
    """Normalise log-weights over the expert axis (0)."""
    return log_w - logsumexp(log_w, 0)[None]


def mix(lp: np.ndarray, log_w: np.ndarray) -> np.ndarray:
    """log sum_k w_k(t) p_k(x_t) for normalised log-weights `log_w` [K, n, T]."""
    return logsumexp(log_w + lp, 0)


def prefix_log_weights(lp: np.ndarray, log_prior: np.ndarray | None = None) -> np.ndarray:
    """log w_k(t) with w_k(t) ∝ prior_k · prod_{s<t} p_k(x_s), the prefix inside the window."""
    lp = _as_lp(lp)
    prefix = np.zeros_like(lp)
    np.cumsum(lp[:, :, :-1], axis=2, out=prefix[:, :, 1:])
    return normalise(_log_prior(log_prior, lp.shape[0])[:, None, None] + prefix)


def prevtoken_log_weights(lp: np.ndarray, log_prior: np.ndarray | None = None) -> np.ndarray:
    """log w_k(t) with w_k(t) ∝ prior_k · p_k(x_{t-1}); w_k(0) = prior_k."""
    lp = _as_lp(lp)
    prev = np.zeros_like(lp)
    prev[:, :, 1:] = lp[:, :, :-1]
    return normalise(_log_prior(log_prior, lp.shape[0])[:, None, None] + prev)


def uniform(lp: np.ndarray) -> np.ndarray:
    """log p(x_t) = log( (1/K) sum_k p_k(x_t) ): the arithmetic mixture with equal weights."""
    lp = _as_lp(lp)
    return logsumexp(lp, 0) - np.log(lp.shape[0])


def prefix_posterior(lp: np.ndarray, log_prior: np.ndarray | None = None) -> np.ndarray:
    """log sum_k w_k(t) p_k(x_t), w_k(t) ∝ prior_k prod_{s<t} p_k(x_s) (uniform prior by default)."""
    lp = _as_lp(lp)
    return mix(lp, prefix_log_weights(lp, log_prior))


def prevtoken_posterior(lp: np.ndarray, log_prior: np.ndarray | None = None) -> np.ndarray:
    """log sum_k w_k(t) p_k(x_t), w_k(t) ∝ prior_k p_k(x_{t-1}), w_k(0) = prior_k."""
    lp = _as_lp(lp)
    return mix(lp, prevtoken_log_weights(lp, log_prior))


def top_k(lp: np.ndarray, k: int, log_prior: np.ndarray | None = None) -> np.ndarray:
    """Prefix-posterior mixture over the k heaviest experts per token, weights renormalised.

    Ties are broken towards the lower expert index (all weights tie at t = 0 under a uniform prior).
    """
    lp = _as_lp(lp)
    if k < 1:
        raise EnsembleError(f"top-k needs k >= 1, got {k}")
    log_w = prefix_log_weights(lp, log_prior)
    if k >= lp.shape[0]:
        return mix(lp, log_w)
    order = np.argsort(-log_w, axis=0, kind="stable")
    keep = np.zeros(log_w.shape, dtype=bool)
    np.put_along_axis(keep, order[:k], True, axis=0)
    return mix(lp, normalise(np.where(keep, log_w, -np.inf)))


def best_expert_index(lp: np.ndarray) -> int:
    """The expert with the highest total log-likelihood (lowest loss) on these windows."""
    lp = _as_lp(lp)
    return int(np.argmax(lp.reshape(lp.shape[0], -1).sum(axis=1)))


def best_expert(lp: np.ndarray) -> np.ndarray:
    """Oracle: log p_{k*}(x_t) with k* the expert of lowest loss on the scored data itself."""
    lp = _as_lp(lp)
    return lp[best_expert_index(lp)].copy()


def estimate_prior(val_lp: np.ndarray, alpha: float) -> np.ndarray:
    """Cached domain prior (log, [K]) from validation windows, as BTM.

    Per window i: q_i = softmax_k( sum_t log p_k(x_{i,t}) ) (the window's posterior under a
    uniform prior). The prior is their exponential moving average in window order with smoothing
    `alpha` (pandas `ewm(alpha).mean()`, adjusted): pi = sum_i (1-alpha)^(m-1-i) q_i / sum_i (1-alpha)^(m-1-i).
    No windows -> uniform prior.
    """
    val_lp = _as_lp(val_lp)
    k, m = val_lp.shape[:2]
    if m == 0:
        return np.full(k, -np.log(k))
    if not 0 < alpha <= 1:
        raise EnsembleError(f"prior alpha must be in (0, 1], got {alpha}")
    q = normalise(val_lp.sum(axis=2))  # [K, m], log posteriors per window
    log_decay = np.log1p(-alpha) if alpha < 1 else -np.inf
    with np.errstate(invalid="ignore"):
        age = (m - 1 - np.arange(m)).astype(np.float64)
        log_r = np.where(age == 0, 0.0, age * log_decay)  # log (1-alpha)^age, 0^0 = 1
    return normalise(logsumexp(q + log_r[None, :], 1))


def mix_cached(
    method: str,
    lp: np.ndarray,
    val_lp: np.ndarray | None = None,
    *,
    top_k_experts: int = 2,
    prior_alpha: float = 0.3,
) -> np.ndarray:
    """Run one registered method that scores from cached log-probs on test log-probs `lp`.

    `val_lp` (the same experts' scores on validation windows of the same domain) is needed
    only by the methods with a cached prior and is the only data the prior sees.
    """
    entry = MIXING_METHODS.get(method)
    if entry.routed:
        raise EnsembleError(f"{method} needs a router: evaluate a run (hdee eval) or generate with --router")
    if entry.score is None:
        cached = ", ".join(m.name for m in MIXING_METHODS if m.cached)
        raise EnsembleError(f"unknown cached mixing method {method!r} (it needs full distributions); cached: {cached}")
    prior = None
    if entry.needs_prior:
        if val_lp is None:
            raise EnsembleError(f"{method} needs validation scores to estimate its prior")
        prior = estimate_prior(val_lp, prior_alpha)
    return entry.score(lp, prior, top_k_experts)


def perplexity(mixture_lp: np.ndarray) -> float:
    """exp of the mean negative log-probability over every scored token."""
    mixture_lp = np.asarray(mixture_lp, dtype=np.float64)
    if mixture_lp.size == 0:
        return float("nan")
    return float(np.exp(-mixture_lp.mean()))
