"""The router kinds, registered by name (`hdee.registry.ROUTERS`, which `routing.router` in a config
is checked against): how each one is fitted, what it computes from a prefix, its cost, and what a
saved one must hold. A new kind is one class with these members, registered with one call:

    register_router("my-router", MyRouter)

`tfidf` and `hidden` are nearest-centroid (`hdee.ensemble.routers.Router` keeps the centroids and
scores by cosine similarity); `bigram` is a router LM per expert and brings its own `scores` (the
prefix's log-likelihood). A kind that reads whole train windows, not only their first R tokens,
says `fit_tokens = "window"`. The heavy code is imported only when a router is fitted or used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hdee.registry import ROUTERS, RouterEntry


def register_router(name: str, cls: type) -> RouterEntry:
    """Register router kind `name`: `cls` has `needs_prefix_model`, `shared_data` (fitted with the
    seed domains' data as well), and static `fit`, `features`, `flops_per_window`, `check`;
    optionally `fit_tokens = "window"` (fit on whole train windows) and a static `scores`
    (replacing cosine similarity to the centroids)."""
    return ROUTERS.add(RouterEntry(name, cls), builtin=_builtins)


_builtins = True


class TfidfRouter:
    """Sublinear tf-idf over token ids; idf from the seed models' data, which every expert owner shares."""

    needs_prefix_model = False
    shared_data = True

    @staticmethod
    def fit(expert_prefixes: list[np.ndarray], shared_prefixes: np.ndarray, vocab: int, route_tokens: int,
            prefix_model: Any) -> Any:
        from hdee.ensemble.routers import fit_tfidf

        return fit_tfidf(expert_prefixes, shared_prefixes, vocab, route_tokens)

    @staticmethod
    def features(router: Any, prefixes: np.ndarray, model: Any) -> Any:
        from hdee.ensemble.routers import tfidf, token_counts

        return tfidf(token_counts(prefixes, len(router.idf)), router.idf.astype(np.float64))

    @staticmethod
    def flops_per_window(router: Any) -> float:
        """4 per prefix token (counts, tf, idf, norm) + 2*K per prefix token (sparse dot products)."""
        k, r = router.centroids.shape[0], router.route_tokens
        return float(4 * r + 2 * k * r)

    @staticmethod
    def check(router: Any) -> str | None:
        width = router.centroids.shape[1]
        if router.idf is None or router.idf.shape != (width,):
            return f"a tfidf router needs 'idf' of shape [{width}]"
        return None


class HiddenRouter:
    """The prefix model's final hidden state (after the last norm), averaged over the prefix."""

    needs_prefix_model = True
    shared_data = False

    @staticmethod
    def fit(expert_prefixes: list[np.ndarray], shared_prefixes: np.ndarray, vocab: int, route_tokens: int,
            prefix_model: Any) -> Any:
        from hdee.ensemble.routers import fit_hidden

        return fit_hidden(expert_prefixes, prefix_model, route_tokens)

    @staticmethod
    def features(router: Any, prefixes: np.ndarray, model: Any) -> Any:
        from hdee.core.errors import EnsembleError
        from hdee.ensemble.routers import hidden_means, unit_rows

        if model is None:
            raise EnsembleError("the hidden-state router needs its prefix model")
        return unit_rows(hidden_means(model, prefixes))

    @staticmethod
    def flops_per_window(router: Any) -> float:
        """A mean over the prefix (r*d), the norm (3*d) and K dot products (2*K*d)."""
        k, d = router.centroids.shape
        r = router.route_tokens
        return float(r * d + 3 * d + 2 * k * d)

    @staticmethod
    def check(router: Any) -> str | None:
        return None


class BigramRouter:
    """A bigram router LM per expert (hdee.ensemble.router_lm), fitted on whole train windows."""

    needs_prefix_model = False
    shared_data = True
    fit_tokens = "window"

    @staticmethod
    def fit(expert_prefixes: list[np.ndarray], shared_prefixes: np.ndarray, vocab: int, route_tokens: int,
            prefix_model: Any) -> Any:
        from hdee.ensemble.router_lm import fit_bigram

        return fit_bigram(expert_prefixes, shared_prefixes, vocab, route_tokens)

    @staticmethod
    def scores(router: Any, prefixes: np.ndarray, model: Any) -> np.ndarray:
        from hdee.ensemble.router_lm import bigram_loglik

        return bigram_loglik(router, prefixes)

    @staticmethod
    def features(router: Any, prefixes: np.ndarray, model: Any) -> Any:
        return BigramRouter.scores(router, prefixes, model)

    @staticmethod
    def flops_per_window(router: Any) -> float:
        from hdee.ensemble.router_lm import bigram_flops_per_window

        return bigram_flops_per_window(router)

    @staticmethod
    def check(router: Any) -> str | None:
        k, vocab = router.centroids.shape
        offsets = router.tables.get("offsets")
        if router.idf is None or router.idf.shape != (vocab,):
            return f"a bigram router needs 'idf' (the background unigram) of shape [{vocab}]"
        if offsets is None or offsets.shape != (k + 1,) or "keys" not in router.tables or "counts" not in router.tables:
            return f"a bigram router needs tables 'keys', 'counts' and 'offsets' of shape [{k + 1}]"
        if int(offsets[-1]) != len(router.tables["keys"]) or len(router.tables["counts"]) != len(router.tables["keys"]):
            return "a bigram router's 'offsets' do not match its 'keys' and 'counts'"
        return None


register_router("tfidf", TfidfRouter)
register_router("hidden", HiddenRouter)
register_router("bigram", BigramRouter)
_builtins = False
