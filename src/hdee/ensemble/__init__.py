"""Ensembles of expert LMs: scoring, mixing methods, generation and parameter averaging."""

from hdee.ensemble.average import average_experts
from hdee.ensemble.ensemble import Ensemble
from hdee.ensemble.generate import Generation, generation_methods
from hdee.ensemble.mixing import estimate_prior, mix_cached, perplexity
from hdee.ensemble.product import product_scores
from hdee.ensemble.scoring import score_cached, score_domains, score_expert

__all__ = [
    "Ensemble",
    "Generation",
    "average_experts",
    "estimate_prior",
    "generation_methods",
    "mix_cached",
    "perplexity",
    "product_scores",
    "score_cached",
    "score_domains",
    "score_expert",
]
