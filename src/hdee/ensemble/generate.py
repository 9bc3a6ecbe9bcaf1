"""Sampling from an ensemble's mixture, one token at a time.

Each expert keeps its own KV cache (the HF model's `cache`; `past_key_values` in older transformers 5.x) and contributes only its next-token
distribution at the last position; the expert weights are updated with the probability each
expert gave every token of the prompt and of the text generated so far, exactly as the cached
evaluation methods weight them (see docs/ensembling.md).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from hdee.core.errors import EnsembleError
from hdee.registry import MIXING_METHODS, default_method


def generation_methods() -> list[str]:
    """The registered methods that can sample (best-expert, an oracle over test scores, cannot)."""
    return [m.name for m in MIXING_METHODS if m.can_generate]


@dataclass
class Generation:
    prompt_ids: list[int]
    new_ids: list[int]
    weights: np.ndarray  # [steps, K]: expert weights used at each step (product: 1/K each)
    step_logprobs: np.ndarray | None = None  # [steps, vocab] mixture log-probs, when kept
    text: str | None = None
    capped_at: int | None = None  # the experts' context, when it cut the request short

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.new_ids


def _cache_kwarg(model: torch.nn.Module) -> str:
    """The name under which this transformers version passes a KV cache back into `forward`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class _ExpertStream:
    """One expert's next-token log-probs along a growing sequence, with or without a KV cache."""

    def __init__(self, model: torch.nn.Module, use_cache: bool):
        self.model = model
        self.use_cache = use_cache
        self.cache = None
        self.cache_kwarg = _cache_kwarg(model)
        self.ids: list[int] = []

    def start(self, prompt: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs of prompt tokens 1.. [P-1], next-token log-probs [V])."""
        self.ids = list(prompt)
        x = torch.tensor([self.ids], dtype=torch.long)
        out = self.model(input_ids=x, use_cache=self.use_cache)
        self.cache = _cache_of(out) if self.use_cache else None
        lsm = torch.log_softmax(out.logits[0].double(), dim=-1)
        seen = lsm[:-1].gather(-1, x[0, 1:, None]).squeeze(-1)
        return seen, lsm[-1]

    def step(self, token: int) -> torch.Tensor:
        self.ids.append(token)
        if self.use_cache:
            out = self.model(input_ids=torch.tensor([[token]]), use_cache=True, **{self.cache_kwarg: self.cache})
            self.cache = _cache_of(out)
        else:
            out = self.model(input_ids=torch.tensor([self.ids]), use_cache=False, logits_to_keep=1)
        return torch.log_softmax(out.logits[0, -1].double(), dim=-1)


def context_length(models: Sequence[torch.nn.Module]) -> int | None:
    """The longest sequence every model was built for (`max_position_embeddings`), if they say."""
    sizes = [getattr(getattr(m, "config", None), "max_position_embeddings", None) for m in models]
    known = [int(n) for n in sizes if n]
    return min(known) if known else None


def _sample(logp: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logp))
    probs = torch.softmax(logp / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, 0) - sorted_p  # mass strictly above each token
        sorted_p = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs.float(), 1, generator=gen))


# ------------------------------------------------------- how each method weighs its experts per step
# Log-weights before normalisation from the prior and what each expert gave the text so far:
# `seen` the summed log-probs of every token after the first, `last` those of the latest token.


def uniform_weights(log_prior: torch.Tensor, seen: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    return torch.full((len(seen),), 0.0, dtype=torch.float64)


def prefix_weights(log_prior: torch.Tensor, seen: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    return log_prior + seen


def prevtoken_weights(log_prior: torch.Tensor, seen: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    return log_prior + (last if last is not None else 0.0)


def weighted(weights, top_k: bool = False):
    """A generation step for an arithmetic mixture whose expert weights `weights` gives; with
    `top_k`, only the k heaviest experts are kept (ties -> lower expert index, as in evaluation)."""

    def step(dists: torch.Tensor, log_prior: torch.Tensor, seen: torch.Tensor, last: torch.Tensor | None, k: int):
        logw = weights(log_prior, seen, last)
        logw = logw - torch.logsumexp(logw, 0)
        if top_k and k < len(logw):
            order = np.argsort(-logw.numpy(), kind="stable")
            keep = torch.zeros(len(logw), dtype=torch.bool)
            keep[torch.from_numpy(order[:k].copy())] = True
            logw = torch.where(keep, logw, torch.tensor(-torch.inf, dtype=logw.dtype))
            logw = logw - torch.logsumexp(logw, 0)
        return logw, torch.logsumexp(logw[:, None] + dists, dim=0)

    return step


def product_step(dists: torch.Tensor, log_prior: torch.Tensor, seen: torch.Tensor, last: torch.Tensor | None, k: int):
    """Product of experts: the normalised geometric mean of the experts' distributions."""
    n = dists.shape[0]
    return torch.full((n,), -float(np.log(n)), dtype=torch.float64), torch.log_softmax(dists.mean(0), dim=-1)


@torch.inference_mode()
def generate_ids(
    models: Sequence[torch.nn.Module],
    prompt_ids: Sequence[int],
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    method: str | None = None,
    seed: int = 0,
    *,
    log_prior: np.ndarray | None = None,
    top_k: int = 2,
    use_cache: bool = True,
    eos_id: int | None = None,
    keep_distributions: bool = False,
    on_token: Callable[[int], None] | None = None,
) -> Generation:
    """Sample up to `max_new_tokens` from the mixture of `models` after `prompt_ids` (with the
    default mixing method, `hdee.registry.default_method()`, when none is named).

    Prompt and new tokens together never exceed the models' context (`max_position_embeddings`):
    a longer request stops there (`Generation.capped_at`), a prompt that fills it is refused.
    `on_token` receives each new token as soon as it is sampled.
    """
    method = method or default_method()
    entry = MIXING_METHODS.find(method)
    if entry is None or entry.generate is None:
        raise EnsembleError(f"cannot generate with method {method!r}; use one of: {', '.join(generation_methods())}")
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise EnsembleError("generation needs a prompt of at least one token")
    if not 0 < top_p <= 1:
        raise EnsembleError(f"top_p must be in (0, 1], got {top_p}")
    context = context_length(models)
    capped_at = None
    if context is not None:
        if len(prompt) >= context:
            raise EnsembleError(f"the prompt has {len(prompt)} tokens, which fills the experts' context of {context}; shorten it")
        if len(prompt) + max_new_tokens > context:
            max_new_tokens, capped_at = context - len(prompt), context
    k = len(models)
    if entry.needs_prior:
        if log_prior is None:
            raise EnsembleError(f"{method} needs a prior (estimate one with hdee.ensemble.mixing.estimate_prior)")
        prior = torch.as_tensor(np.asarray(log_prior, dtype=np.float64))
        if prior.shape != (k,):
            raise EnsembleError(f"prior has {prior.numel()} weights for {k} experts")
        prior = prior - torch.logsumexp(prior, 0)
    else:
        prior = torch.full((k,), -float(np.log(k)), dtype=torch.float64)

    streams = [_ExpertStream(m, use_cache) for m in models]
    starts = [s.start(prompt) for s in streams]
    seen = torch.stack([s[0].sum() for s in starts])  # log p_k(prompt tokens after the first)
    last = torch.stack([s[0][-1] for s in starts]) if len(prompt) > 1 else None
    dists = torch.stack([s[1] for s in starts])  # [K, V]

    gen = torch.Generator().manual_seed(seed)
    new_ids: list[int] = []
    weights: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    for step in range(max_new_tokens):
        logw, mixture = entry.generate(dists, prior, seen, last, top_k)
        weights.append(logw.exp().numpy())
        if keep_distributions:
            kept.append(mixture.float().numpy())
        token = _sample(mixture, temperature, top_p, gen)
        new_ids.append(token)
        if on_token is not None:
            on_token(token)
        last = dists[:, token]
        seen = seen + last
        if token == eos_id or step == max_new_tokens - 1:
            break
        dists = torch.stack([s.step(token) for s in streams])
    return Generation(
        prompt_ids=prompt,
        new_ids=new_ids,
        weights=np.stack(weights) if weights else np.zeros((0, k)),
        step_logprobs=np.stack(kept) if keep_distributions and kept else None,
        capped_at=capped_at,
    )
