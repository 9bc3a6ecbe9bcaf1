"""Routing on the text before a window (`routed-prev-top<k>`), as a deployed system would.

Evaluation windows cut a split's token stream into consecutive pieces (`eval_windows`), so
window i-1 is the text a reader saw just before window i. A window's routing context is the
previous window up to (not including) the token they share, from just after its last EOS, or its
last `routing.context_tokens` tokens when that is set (shorter and cheaper): a document boundary
resets it, and a window that starts a document (its first token, or the shared
one, is EOS) has no context. Such windows fall back to routing on their own prefix
(`routed-top<k>`). Nothing of the scored window is read: the shared token is the window's given
first token, never a scored one, and it is left out of the context too.

With context, the router picks k experts from it and those k score all of the window's tokens.
For k > 1 it is a cascade: the chosen experts' own likelihood of the context is their starting
posterior (each already ran on the context, and the FLOPs count it), updated token by token
through the window as in `prefix-posterior`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from hdee.core.errors import EnsembleError


@dataclass(frozen=True)
class Contexts:
    """Per window: where its context starts in the previous window (`start`), its length (0: none)."""

    start: np.ndarray  # int [n]
    length: np.ndarray  # int [n]

    def tokens(self, windows: np.ndarray, i: int) -> np.ndarray:
        """Window i's context tokens, from window i-1 (empty when it has none)."""
        if self.length[i] == 0:
            return np.zeros(0, dtype=np.int64)
        s = int(self.start[i])
        return np.asarray(windows[i - 1][s : s + int(self.length[i])], dtype=np.int64)


def previous_contexts(windows: np.ndarray, eos_id: int, max_tokens: int | None = None) -> Contexts:
    """The routing context of each window [n, T + 1]: window i-1's tokens [s, T) after its last EOS,
    its last `max_tokens` of them when given (`routing.context_tokens`)."""
    w = np.asarray(windows)
    if w.ndim != 2:
        raise EnsembleError(f"windows must be [n, tokens], got {list(w.shape)}")
    n, width = w.shape
    start, length = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    T = width - 1
    for i in range(1, n):
        prev = w[i - 1, :T]
        if w[i, 0] == eos_id:  # the window starts a document
            continue
        eos = np.flatnonzero(prev == eos_id)
        s = int(eos[-1]) + 1 if eos.size else 0
        if max_tokens is not None:
            s = max(s, T - max_tokens)
        start[i], length[i] = s, T - s
    return Contexts(start, length)


def scores_by_length(score: "callable", windows: np.ndarray, ctx: Contexts, experts: int) -> np.ndarray:
    """Router scores [n, K] of each window's context (zeros where it has none), one call per
    context length so that every router kind sees a rectangular batch."""
    out = np.zeros((len(ctx.length), experts))
    for length in np.unique(ctx.length[ctx.length > 0]):
        rows = np.flatnonzero(ctx.length == length)
        batch = np.stack([ctx.tokens(windows, i) for i in rows])
        out[rows] = score(batch)
    return out


def context_loglik(lp: np.ndarray, ctx: Contexts, choice: np.ndarray) -> np.ndarray:
    """[n, k]: each chosen expert's log-likelihood of the window's context, from its cached scores
    of the previous window (the context's first token is given, the rest predicted)."""
    lp = np.asarray(lp, dtype=np.float64)
    n, k = choice.shape
    out = np.zeros((n, k))
    T = lp.shape[2]
    for i in np.flatnonzero(ctx.length > 1):
        s = int(ctx.start[i])  # lp[:, i-1, t] predicts window token t+1: context tokens s+1 .. T-1
        out[i] = lp[choice[i], i - 1, s : T - 1].sum(axis=1)
    return out


def cascade_mix(lp: np.ndarray, choice: np.ndarray, start_loglik: np.ndarray) -> np.ndarray:
    """[n, T]: the prefix posterior over each window's chosen experts, started from `start_loglik`
    [n, k] instead of a uniform prior."""
    lp = np.asarray(lp, dtype=np.float64)
    chosen = np.take_along_axis(lp, choice.T[:, :, None], axis=0)  # [k, n, T]
    seen = np.concatenate([np.zeros(chosen.shape[:2] + (1,)), np.cumsum(chosen[:, :, :-1], axis=2)], axis=2)
    log_w = start_loglik.T[:, :, None] + seen
    log_w = log_w - logsumexp(log_w, axis=0, keepdims=True)
    return logsumexp(log_w + chosen, axis=0)
