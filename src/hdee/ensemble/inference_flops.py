"""Inference FLOPs per scored token of each mixing method: every model it runs, plus its router.

Hardware convention (`hdee.model.forward_flops`): a forward pass over n tokens of a window costs
2 x (non-embedding + LM head) parameters per token plus causal attention. Per method, for
evaluation windows of T tokens:

* methods that mix all K experts (uniform, the posteriors, cached priors, top-k, product): every
  expert runs on every window, sum_k F_k(T). top-k scores all K to find its k heaviest.
* `best-expert`: the oracle's one expert, F_k*(T).
* `routed-top<k>`: the prefix model over the first R tokens, the router, and the k chosen
  experts over the whole window (they need the prefix as context): F_p(R) + router + sum_chosen F(T),
  averaged over windows.
* `routed-prev-top<k>` (hdee.ensemble.previous_context): on a window with a previous context of
  L tokens, the router on it (for a hidden-state router the prefix model's F_p(L) too), for k > 1
  the chosen experts over it (their starting posterior, sum_chosen F(L)), and the chosen experts over
  the window; a window without context costs what `routed-top<k>` does. Averaged over windows.

Not counted: the mixing arithmetic (a few operations per expert and token), and a cached prior,
estimated once per domain on validation windows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hdee.ensemble.experts import ExpertInfo
from hdee.core.errors import EnsembleError, HdeeError
from hdee.model import SizeSpec, forward_flops, param_counts, pretrained_spec
from hdee.registry import MIXING_METHODS


def model_spec(info: ExpertInfo) -> SizeSpec:
    """The shape and exact parameter counts of an expert, whatever its architecture (from its
    config.json, built on the meta device; memoised per directory)."""
    return _spec(str(info.path.resolve()), info.record.size_name or "")


@functools.lru_cache(maxsize=None)
def _spec(path: str, size: str) -> SizeSpec:
    try:
        return pretrained_spec(path, size, 1)
    except (HdeeError, ValueError) as exc:
        raise EnsembleError(f"{path}: cannot count its FLOPs ({exc})") from None


def total_params(info: ExpertInfo) -> int:
    return param_counts(model_spec(info))["total"]


def window_flops(info: ExpertInfo, tokens: int) -> float:
    """One forward pass of this model over the first `tokens` tokens of a window."""
    return forward_flops(model_spec(info), tokens)


@dataclass(frozen=True)
class RoutedCost:
    """What a routed method ran on each window of a domain."""

    prefix_flops: float  # the prefix model (first R tokens, or a previous context) per window, averaged
    router_flops: float  # one routing decision, averaged over windows
    choice: np.ndarray  # int [windows, k]: the experts run on each window
    context_flops: float = 0.0  # a cascade's chosen experts over the previous context, averaged


def method_flops(
    method: str,
    expert_windows: Sequence[float],
    seq_len: int,
    *,
    best: int | None = None,
    routed: RoutedCost | None = None,
) -> float:
    """FLOPs per scored token of `method`, from each expert's forward FLOPs over one window."""
    full = np.asarray(expert_windows, dtype=np.float64)
    entry = MIXING_METHODS.get(method)
    if entry.runs_one:
        if best is None:
            raise EnsembleError(f"{method} FLOPs need the chosen expert")
        return float(full[best] / seq_len)
    if entry.routed:
        if routed is None:
            raise EnsembleError(f"{method} FLOPs need the routing choices")
        experts = full[np.asarray(routed.choice, dtype=np.int64)].sum(axis=1).mean() if routed.choice.size else 0.0
        return float((routed.prefix_flops + routed.router_flops + routed.context_flops + experts) / seq_len)
    return float(full.sum() / seq_len)
