"""Ensembles of expert LMs: scoring, mixing methods, generation and parameter averaging.

The names below load on first use, so importing `hdee.ensemble.methods` (the mixing-method
registry a config is checked against) does not import torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Ensemble": "hdee.ensemble.ensemble",
    "Generation": "hdee.ensemble.generate",
    "average_experts": "hdee.ensemble.average",
    "estimate_prior": "hdee.ensemble.mixing",
    "generation_methods": "hdee.ensemble.generate",
    "mix_cached": "hdee.ensemble.mixing",
    "perplexity": "hdee.ensemble.mixing",
    "product_scores": "hdee.ensemble.product",
    "score_cached": "hdee.ensemble.scoring",
    "score_domains": "hdee.ensemble.scoring",
    "score_expert": "hdee.ensemble.scoring",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hdee.ensemble' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
