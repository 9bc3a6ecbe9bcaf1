"""Router LMs: one small language model per expert, trained on the expert's own train windows;
a text is routed to the experts whose router LM finds it most likely (a Bayes posterior with a
uniform prior when the temperature is 1).

The `bigram` kind is the smallest such model: bigram counts with Witten-Bell interpolation
(each expert's bigram -> its unigram -> the background unigram of the seed models' data, which
every expert owner shares -> uniform), so a token the expert never saw still has a probability.
Fitting is counting; scoring a token is two binary searches in the expert's sorted bigram keys
and a few operations per expert.

Stored in the router's files: `centroids` [K, V] each expert's unigram counts, `idf` [V] the
background unigram probabilities, and the tables `keys` (the bigrams a*V + b of every expert,
sorted within each expert), `counts` (their counts) and `offsets` [K + 1] (each expert's slice).
"""

from __future__ import annotations

import math

import numpy as np


def _bigrams(windows: np.ndarray, vocab: int) -> np.ndarray:
    w = np.asarray(windows, dtype=np.int64)
    if w.ndim != 2 or w.shape[1] < 2:
        return np.zeros(0, dtype=np.int64)
    return (w[:, :-1] * vocab + w[:, 1:]).ravel()


def fit_bigram(expert_windows: list[np.ndarray], shared_windows: np.ndarray, vocab: int, route_tokens: int):
    """A bigram router LM per expert from its windows; the background unigram from `shared_windows`."""
    from hdee.ensemble.routers import Router, token_ids

    background = np.bincount(np.asarray(shared_windows, dtype=np.int64).ravel(), minlength=vocab)[:vocab].astype(np.float64)
    background = (background + 1.0) / (background.sum() + vocab)  # add-one: every token possible
    unigrams, keys, counts, offsets = [], [], [], [0]
    for w in expert_windows:
        w = token_ids(w, vocab)
        unigrams.append(np.bincount(w.ravel(), minlength=vocab).astype(np.float64))
        k, c = np.unique(_bigrams(w, vocab), return_counts=True)
        keys.append(k)
        counts.append(c.astype(np.float64))
        offsets.append(offsets[-1] + len(k))
    tables = {
        "keys": np.concatenate(keys).astype(np.int64),
        "counts": np.concatenate(counts).astype(np.float32),
        "offsets": np.asarray(offsets, dtype=np.int64),
    }
    return Router("bigram", route_tokens, np.stack(unigrams).astype(np.float32), background.astype(np.float32), tables=tables)


def _witten_bell(count: np.ndarray, total: np.ndarray, types: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """(count + types * lower) / (total + types), the lower order alone where nothing was seen."""
    seen = total > 0
    out = np.array(lower, dtype=np.float64, copy=True)
    out[seen] = (count[seen] + types[seen] * lower[seen]) / (total[seen] + types[seen])
    return out


def _expert_models(router) -> list[tuple[np.ndarray, ...]]:
    """Per expert, what scoring needs from the stored counts (derived once per router): its
    smoothed unigram, its sorted bigram keys and counts, and per token how often it had a successor
    and how many different ones."""
    if "bigram" not in router.derived:
        vocab = len(router.idf)
        background = router.idf.astype(np.float64)
        keys, counts, offsets = router.tables["keys"], router.tables["counts"].astype(np.float64), router.tables["offsets"]
        models = []
        for k, uni in enumerate(router.centroids.astype(np.float64)):
            p_uni = _witten_bell(uni, np.full(vocab, uni.sum()), np.full(vocab, float(np.count_nonzero(uni))), background)
            ek, ec = keys[offsets[k] : offsets[k + 1]], counts[offsets[k] : offsets[k + 1]]
            first = ek // vocab
            ctx_total = np.bincount(first, weights=ec, minlength=vocab)
            ctx_types = np.bincount(first, minlength=vocab).astype(np.float64)
            models.append((p_uni, ek, ec, ctx_total, ctx_types))
        router.derived["bigram"] = models
    return router.derived["bigram"]


def bigram_loglik(router, windows: np.ndarray) -> np.ndarray:
    """Each window's log-likelihood under each expert's router LM, float64 [n, K] (the first token
    under the unigram, every later one under the bigram)."""
    from hdee.ensemble.routers import token_ids

    vocab = len(router.idf)
    w = token_ids(windows, vocab)
    n, width = w.shape
    prev, cur = w[:, :-1].ravel(), w[:, 1:].ravel()
    q = prev * vocab + cur
    out = np.zeros((n, len(router.centroids)))
    for k, (p_uni, ek, ec, ctx_total, ctx_types) in enumerate(_expert_models(router)):
        c = np.zeros(len(q))
        if len(ek):
            pos = np.minimum(np.searchsorted(ek, q), len(ek) - 1)
            c = np.where(ek[pos] == q, ec[pos], 0.0)
        p = _witten_bell(c, ctx_total[prev], ctx_types[prev], p_uni[cur])
        out[:, k] = np.log(p_uni[w[:, 0]]) + np.log(p).reshape(n, width - 1).sum(axis=1)
    return out


def bigram_flops_per_window(router) -> float:
    """Per prefix token and expert: two binary searches in its sorted keys (a compare and an index
    step per level), a log, and about ten arithmetic operations of the interpolation."""
    offsets = router.tables["offsets"]
    widest = int(np.max(np.diff(offsets))) if len(offsets) > 1 else 0
    per_token = 2 * 2 * math.ceil(math.log2(widest + 1)) + 10
    return float(len(router.centroids) * router.route_tokens * per_token)
