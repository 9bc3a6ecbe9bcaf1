"""FLOP accounting of the domain phase, in the budget convention (6 x non-embedding params x tokens).

The plan charges every job with these numbers and the strategies aim at them; both sit above
this module.
"""

from __future__ import annotations

from hdee.config import ExperimentConfig


def size_flops_per_step(cfg: ExperimentConfig, vocab: int, size: str) -> float:
    """Budget FLOPs of one optimizer step of `size` (6 x non-embedding params x batch tokens)."""
    from hdee.model import SizeSpec, flops_per_token  # torch and transformers: only once FLOPs are counted

    spec = SizeSpec.from_family(cfg.model, size, vocab, cfg.data.seq_len)
    return flops_per_token(spec) * cfg.train.batch_tokens


def expert_flops(cfg: ExperimentConfig, vocab: int, size: str, steps: int) -> float:
    return size_flops_per_step(cfg, vocab, size) * steps


def budget_flops(cfg: ExperimentConfig, vocab: int) -> float:
    """The domain-phase budget: every (lineage, iteration) at the baseline size and steps."""
    rule = cfg.budget.baseline
    return len(cfg.lineages) * cfg.iterations * expert_flops(cfg, vocab, rule.size, rule.steps)
