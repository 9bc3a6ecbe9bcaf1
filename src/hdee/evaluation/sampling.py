"""Sampling from a run's ensemble by strategy name: its experts, tokenizer, router and prior come
from the run directory, and the caller learns the speed and whether it went past the context.

`hdee generate RUN --strategy S` and `hdee lm-eval` (its `run_prior`) read a run through here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hdee.ensemble.mixing import estimate_prior
from hdee.ensemble.scoring import split_val
from hdee.core.errors import ConfigError, EnsembleError
from hdee.core.fsutil import read_json
from hdee.registry import MIXING_METHODS

if TYPE_CHECKING:
    from hdee.run import Run
    from hdee.ensemble.generate import Generation


@dataclass
class Sampled:
    """A generation and how it went: which experts ran, its speed, and any warning."""

    generation: "Generation"
    experts: list[str]
    seconds: float  # generation; a routed one includes routing and loading the chosen experts
    context: int | None
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return len(self.generation.new_ids) / self.seconds if self.seconds > 0 else float("inf")


def run_prior(run: "Run", strategy: str, domain: str) -> np.ndarray:
    """The ensemble's cached prior on one of the run's domains (see `domain_prior`)."""
    return domain_prior(run, run.ensembles[strategy].experts, domain)


def domain_prior(run: "Run", ids: list[str], domain: str) -> np.ndarray:
    """The members' cached prior on `domain` (log, [K]): evaluation's estimate, from the cached scores
    of the first `eval.prior_sequences` validation windows."""
    if domain not in run.cfg.eval_domains:
        raise ConfigError(f"--prior-domain {domain!r} is not a domain of the run ({', '.join(run.cfg.eval_domains)})")
    paths = [run.layout.score_path(e, domain, "val") for e in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise EnsembleError(f"{missing[0]}: no cached validation scores (run hdee eval {run.layout.root} first)")
    prior_lp, _ = split_val(np.stack([np.load(p, allow_pickle=False) for p in paths]), run.cfg.eval.prior_sequences)
    return estimate_prior(prior_lp, run.cfg.eval.prior_alpha)


def strategy_router(run: "Run", strategy: str) -> Path:
    """The router evaluation built for `strategy`'s ensemble (named in results.json)."""
    results = run.layout.results_json
    if not results.is_file():
        raise EnsembleError(f"{results}: not found; routed generation needs the router `hdee eval {run.layout.root}` builds")
    routing = (read_json(results).get("ensembles", {}).get(strategy) or {}).get("routing") or {}
    if not routing.get("router_file"):
        raise EnsembleError(f"{results}: no router for {strategy} (a single-expert ensemble, or results from before routing)")
    path = run.layout.root / routing["router_file"]
    if not path.is_file():
        raise EnsembleError(f"{path}: the router results.json names is missing (rerun hdee eval {run.layout.root})")
    return path


def context_length(dirs: Sequence[str | Path]) -> int | None:
    """The shortest trained context (`max_position_embeddings`) among the models in `dirs`."""
    found = []
    for d in dirs:
        try:
            n = read_json(Path(d) / "config.json").get("max_position_embeddings")
        except (OSError, ValueError):
            continue
        if n:
            found.append(int(n))
    return min(found) if found else None


def context_warning(prompt_tokens: int, max_new_tokens: int, context: int | None) -> str | None:
    """One line when the prompt and the new tokens pass the trained context, else None."""
    if context is None or prompt_tokens + max_new_tokens <= context:
        return None
    past = prompt_tokens + max_new_tokens - context
    return (f"warning: the prompt ({prompt_tokens} tokens) and --max-new-tokens {max_new_tokens} pass the experts' trained "
            f"context of {context} tokens by {past}: those positions were never trained, expect degraded text")


def sample(
    dirs: Sequence[Path],
    prompt: str,
    tokenizer: Path,
    method: str,
    *,
    router: Path | None = None,
    log_prior: np.ndarray | None = None,
    max_new_tokens: int = 64,
    **kwargs: Any,
) -> Sampled:
    """Sample from the mixture of `dirs` (or the experts `router` picks), timed, with a context check."""
    from hdee.data.tokenizer import load_hf_tokenizer
    from hdee.ensemble import Ensemble
    from hdee.ensemble.routing import generate_routed

    ens = None
    if router is None:
        ens = Ensemble(dirs)  # checks each directory, then that the tokenizer is theirs
        ens.check_tokenizer_file(tokenizer)
    tok = load_hf_tokenizer(tokenizer, require_eos=False)
    context = context_length(dirs)
    warning = context_warning(len(tok.encode(prompt, add_special_tokens=False)), max_new_tokens, context)
    if ens is not None:
        ens.models  # loaded (and verified) before the clock starts: tokens/s is generation alone
    start = time.perf_counter()
    if ens is None:
        out, chosen = generate_routed(router, prompt, method, tokenizer=tokenizer, max_new_tokens=max_new_tokens, **kwargs)
    else:
        out = ens.generate(prompt, max_new_tokens, method=method, tokenizer=tokenizer, log_prior=log_prior, **kwargs)
        chosen = [Path(d).name for d in dirs]
    return Sampled(out, chosen, time.perf_counter() - start, context, [warning] if warning else [])


def sample_run(run: "Run", strategy: str, prompt: str, method: str | None = None, prior_domain: str | None = None,
               **kwargs: Any) -> Sampled:
    """Sample from `strategy`'s ensemble of the run: a routed method through the run's router, a
    cached-prior method with the prior of `prior_domain`."""
    dirs = run.ensemble_dirs(strategy)
    method = method or "prefix-posterior"
    entry = MIXING_METHODS.find(method)
    if entry is None or (entry.generate is None and not entry.routed):
        from hdee.ensemble.generate import generation_methods

        raise EnsembleError(f"--method {method!r} cannot generate; use one of {', '.join(generation_methods())} or routed-top<k>")
    router = strategy_router(run, strategy) if entry.routed else None
    prior = None
    if entry.needs_prior:
        if prior_domain is None:
            raise EnsembleError(f"{method} needs a prior: add --prior-domain DOMAIN (one of {', '.join(run.cfg.eval_domains)})")
        prior = run_prior(run, strategy, prior_domain)
    elif prior_domain is not None:
        raise ConfigError(f"--prior-domain goes with a cached-prior method, not {method}")
    kwargs.setdefault("top_k", run.cfg.eval.top_k)
    if router is not None:
        kwargs.pop("top_k")
    return sample(dirs, prompt, run.layout.tokenizer_path, method, router=router, log_prior=prior, **kwargs)
