"""Ensembles of expert LMs: scoring, mixing methods, generation and parameter averaging."""

from hdee.ensemble.average import average_experts
from hdee.ensemble.ensemble import Ensemble, load_tokenizer
from hdee.ensemble.generate import GENERATION_METHODS, Generation
from hdee.ensemble.mixing import CACHED_METHODS, estimate_prior, mix_cached, perplexity
from hdee.ensemble.product import product_scores
from hdee.ensemble.scoring import score_cached, score_domain, score_expert

__all__ = [
    "CACHED_METHODS",
    "GENERATION_METHODS",
    "Ensemble",
    "Generation",
    "average_experts",
    "estimate_prior",
    "load_tokenizer",
    "mix_cached",
    "perplexity",
    "product_scores",
    "score_cached",
    "score_domain",
    "score_expert",
]
