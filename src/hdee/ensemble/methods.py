"""The mixing methods, registered by name with their traits (the list evaluation and generation use).

A method scores from the experts' cached true-token log-probs (`score`), or, when it needs their
full next-token distributions, by running the models (`score_models`); it can sample when it says
how to weigh the experts at each step (`generate`). Registering one is one call, from any module:

    register_method("my-mix", score=lambda lp, log_prior, top_k: ...)

(`lp` [K, n, T] float64 log-probs, `log_prior` [K] or None, result [n, T]; see docs/ensembling.md.)
A routed method has neither: a router picks its k experts (`routed=k`, hdee.ensemble.routing);
every `routed-top<k>`, `routed-prev-top<k>`, `routed-soft-top<k>` and `routed-prev-soft-top<k>` name
is known without registering it.
"""

from __future__ import annotations

from typing import Any, Callable

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
    runs_one: bool = False,
    default: bool = False,
) -> MixingEntry:
    """Register a mixing method; exactly one of `score` (cached log-probs) or `score_models`, or
    neither for a routed method (`routed` = k, the experts it runs; hdee.ensemble.routing).
    `runs_one`: it runs only the one expert it picks (its inference cost is that expert's);
    `default`: the method generation and lm-eval use when none is named (one built-in has it)."""
    if routed < 0 or (routed > 0) == (score is not None or score_models is not None) or (score and score_models):
        raise ValueError(f"mixing method {name!r} needs exactly one of score, score_models or routed")
    entry = MixingEntry(
        name, score=score, score_models=score_models, generate=generate, needs_prior=needs_prior, oracle=oracle, routed=routed,
        runs_one=runs_one, default=default,
    )
    return MIXING_METHODS.add(entry, builtin=_registering_builtins)


# The built-ins call into numpy/torch code only when used, so that reading a config (which checks
# method names against this registry) imports neither.


def _mix(name: str, *, prior: bool = False, top_k: bool = False) -> Callable[..., Any]:
    """`score` for a built-in: `hdee.ensemble.mixing.<name>` on cached log-probs."""

    def score(lp: Any, log_prior: Any, k: int | None) -> Any:
        from hdee.ensemble import mixing

        fn = getattr(mixing, name)
        if top_k:
            return fn(lp, k)
        return fn(lp, log_prior) if prior else fn(lp)

    score.__qualname__ = f"score_{name}{'_prior' if prior else ''}"
    return score


def _sample(weights: str | None, *, top_k: bool = False) -> Callable[..., Any]:
    """`generate` for a built-in: `hdee.ensemble.generate.weighted(<weights>)`, or the product's step."""

    built: list[Callable[..., Any]] = []  # the real step, made on first use (not per sampled token)

    def step(*args: Any, **kwargs: Any) -> Any:
        if not built:
            from hdee.ensemble import generate as gen

            built.append(gen.product_step if weights is None else gen.weighted(getattr(gen, weights), top_k=top_k))
        return built[0](*args, **kwargs)

    return step


def _product_scores(*args: Any, **kwargs: Any) -> Any:
    from hdee.ensemble.product import product_scores

    return product_scores(*args, **kwargs)


# the built-ins, in the order results and reports list them; `eval.methods` defaults to them
_registering_builtins = True
register_method("uniform", score=_mix("uniform"), generate=_sample("uniform_weights"))
register_method("prefix-posterior", score=_mix("prefix_posterior"), generate=_sample("prefix_weights"), default=True)
register_method("prevtoken-posterior", score=_mix("prevtoken_posterior"), generate=_sample("prevtoken_weights"))
register_method("cached-prior", score=_mix("prefix_posterior", prior=True), generate=_sample("prefix_weights"),
                needs_prior=True)
register_method("cached-prior-prevtoken", score=_mix("prevtoken_posterior", prior=True),
                generate=_sample("prevtoken_weights"), needs_prior=True)
register_method("top-k", score=_mix("top_k", top_k=True), generate=_sample("prefix_weights", top_k=True))
register_method("best-expert", score=_mix("best_expert"), oracle=True, runs_one=True)
register_method("product", score_models=_product_scores, generate=_sample(None))
register_method("routed-top1", routed=1)
register_method("routed-top2", routed=2)
_registering_builtins = False
# routed-top<k> for any other k is registered the first time a config or a call names it, and so
# is routed-prev-top<k> (routing on the text before the window)
MIXING_METHODS.add_family(r"routed-top([1-9][0-9]*)", lambda m: MixingEntry(m.group(0), routed=int(m.group(1))))
MIXING_METHODS.add_family(r"routed-prev-top([1-9][0-9]*)",
                          lambda m: MixingEntry(m.group(0), routed=int(m.group(1)), context="previous"))
# and routed-soft-top<k> / routed-prev-soft-top<k>: the router's softmax weights over the k (c-BTM)
MIXING_METHODS.add_family(r"routed-soft-top([1-9][0-9]*)",
                          lambda m: MixingEntry(m.group(0), routed=int(m.group(1)), weights="router"))
MIXING_METHODS.add_family(r"routed-prev-soft-top([1-9][0-9]*)",
                          lambda m: MixingEntry(m.group(0), routed=int(m.group(1)), context="previous", weights="router"))
