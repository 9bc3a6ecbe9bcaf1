"""The mixing methods, registered by name with their traits (the list evaluation and generation use).

A method scores from the experts' cached true-token log-probs (`score`), or, when it needs their
full next-token distributions, by running the models (`score_models`); it can sample when it says
how to weigh the experts at each step (`generate`). Registering one is one call, from any module:

    register_method("my-mix", score=lambda lp, log_prior, top_k: ...)

(`lp` [K, n, T] float64 log-probs, `log_prior` [K] or None, result [n, T]; see docs/ensembling.md.)
A routed method has neither: a router picks its k experts (`routed=k`, hdee.ensemble.routing);
every `routed-top<k>` name is known without registering it.
"""

from __future__ import annotations

from typing import Any, Callable

from hdee.ensemble import generate as gen
from hdee.ensemble import mixing
from hdee.ensemble.product import product_scores
from hdee.registry import MIXING_METHODS, MixingEntry


def register_method(
    name: str,
    *,
    score: Callable[..., Any] | None = None,
    score_models: Callable[..., Any] | None = None,
    generate: Callable[..., Any] | None = None,
    needs_prior: bool = False,
    oracle: bool = False,
    routed: int = 0,
) -> MixingEntry:
    """Register a mixing method; exactly one of `score` (cached log-probs) or `score_models`, or
    neither for a routed method (`routed` = k, the experts it runs; hdee.ensemble.routing)."""
    if routed < 0 or (routed > 0) == (score is not None or score_models is not None) or (score and score_models):
        raise ValueError(f"mixing method {name!r} needs exactly one of score, score_models or routed")
    entry = MixingEntry(
        name, score=score, score_models=score_models, generate=generate, needs_prior=needs_prior, oracle=oracle, routed=routed
    )
    return MIXING_METHODS.add(entry, builtin=_registering_builtins)


# the built-ins, in the order results and reports list them; `eval.methods` defaults to them
_registering_builtins = True
register_method("uniform", score=lambda lp, log_prior, top_k: mixing.uniform(lp), generate=gen.weighted(gen.uniform_weights))
register_method(
    "prefix-posterior", score=lambda lp, log_prior, top_k: mixing.prefix_posterior(lp), generate=gen.weighted(gen.prefix_weights)
)
register_method(
    "prevtoken-posterior",
    score=lambda lp, log_prior, top_k: mixing.prevtoken_posterior(lp),
    generate=gen.weighted(gen.prevtoken_weights),
)
register_method(
    "cached-prior",
    score=lambda lp, log_prior, top_k: mixing.prefix_posterior(lp, log_prior),
    generate=gen.weighted(gen.prefix_weights),
    needs_prior=True,
)
register_method(
    "cached-prior-prevtoken",
    score=lambda lp, log_prior, top_k: mixing.prevtoken_posterior(lp, log_prior),
    generate=gen.weighted(gen.prevtoken_weights),
    needs_prior=True,
)
register_method(
    "top-k",
    score=lambda lp, log_prior, top_k: mixing.top_k(lp, top_k),
    generate=gen.weighted(gen.prefix_weights, top_k=True),
)
register_method("best-expert", score=lambda lp, log_prior, top_k: mixing.best_expert(lp), oracle=True)
register_method("product", score_models=product_scores, generate=gen.product_step)
register_method("routed-top1", routed=1)
register_method("routed-top2", routed=2)
_registering_builtins = False
# routed-top<k> for any other k is registered the first time a config or a call names it
MIXING_METHODS.add_family(r"routed-top([1-9][0-9]*)", lambda m: MixingEntry(m.group(0), routed=int(m.group(1))))
