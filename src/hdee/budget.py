"""FLOP accounting of the domain phase, in either of two conventions (`budget.flops`).

* ``paper``: 6 x non-embedding parameters per trained token (`hdee.model.flops_per_token`), as in
  the HDEE paper; it reproduces the paper's 5.61e17 domain-phase budget.
* ``hardware``: every matmul of a training step, LM head and causal attention included
  (`hdee.model.flops_per_token_full`). The head and attention cost the same at every size of a
  family, so the paper's count makes small models look cheaper than they are when size is
  traded for steps.

The config's convention (`budget.flops`) is the one budgets are matched in; the plan records
both counts for every job and strategy. The plan charges every job with these numbers and the
strategies aim at them; both sit above this module.
"""

from __future__ import annotations

import math
from typing import Literal

from hdee.config import ExperimentConfig

FlopConvention = Literal["paper", "hardware"]
CONVENTIONS: tuple[FlopConvention, ...] = ("paper", "hardware")


def size_flops_per_step(cfg: ExperimentConfig, vocab: int, size: str, convention: FlopConvention | None = None) -> float:
    """FLOPs of one optimizer step of `size` (per-token FLOPs x batch tokens), in `convention`
    (default: the config's `budget.flops`)."""
    from hdee.model import flops_per_token, flops_per_token_full, size_spec  # torch and transformers: only once FLOPs are counted

    spec = size_spec(cfg, size, vocab)  # a family size, or an imported seed checkpoint's real shape
    per_token = flops_per_token(spec) if (convention or cfg.budget.flops) == "paper" else flops_per_token_full(spec)
    return per_token * cfg.train.batch_tokens


def expert_flops(cfg: ExperimentConfig, vocab: int, size: str, steps: int, convention: FlopConvention | None = None) -> float:
    return size_flops_per_step(cfg, vocab, size, convention) * steps


def seed_steps(cfg: ExperimentConfig, vocab: int, size: str) -> int:
    """Optimizer steps of the seed model of `size` (0 for an imported checkpoint)."""
    sm = cfg.seed_models
    if sm.from_ is not None:
        return 0
    if sm.tokens is not None:
        return max(1, math.ceil(sm.tokens / cfg.train.batch_tokens))
    return max(1, round(sm.flops / size_flops_per_step(cfg, vocab, size)))


def seed_flops(cfg: ExperimentConfig, vocab: int, sizes: list[str] | set[str], convention: FlopConvention | None = None) -> float:
    """FLOPs of the seed models of `sizes`, one each."""
    return sum(expert_flops(cfg, vocab, s, seed_steps(cfg, vocab, s), convention) for s in set(sizes))


def domain_target(cfg: ExperimentConfig, vocab: int, sizes: list[str] | set[str]) -> float:
    """What a strategy whose experts have `sizes` may spend on its domain phase: the baseline's, and
    with `budget.charge = "total"` less the extra seed models it needs beyond the baseline's one."""
    base = budget_flops(cfg, vocab)
    if cfg.budget.charge == "domain":
        return base
    return base + seed_flops(cfg, vocab, [cfg.budget.baseline.size]) - seed_flops(cfg, vocab, sizes)


def seed_proportions(cfg: ExperimentConfig, vocab: int, seed_tokens: int) -> dict[str, float]:
    """How big the seeds' training is against the domain phase's: seed tokens per expert-iteration
    (one expert of the baseline rule; the paper about 30-50:1) and seed tokens per non-embedding
    parameter of each size (the paper about 120; Chinchilla-optimal about 20)."""
    from hdee.model import param_counts, size_spec

    iteration = cfg.budget.baseline.steps * cfg.train.batch_tokens
    out = {"per_iteration": seed_tokens / iteration}
    for size in cfg.size_names:
        out[f"per_param_{size}"] = seed_tokens / param_counts(size_spec(cfg, size, vocab))["non_embedding"]
    return out


def budget_flops(cfg: ExperimentConfig, vocab: int, convention: FlopConvention | None = None) -> float:
    """The domain-phase budget: every (lineage, iteration) at the baseline size and steps."""
    rule = cfg.budget.baseline
    return len(cfg.lineages) * cfg.iterations * expert_flops(cfg, vocab, rule.size, rule.steps, convention)
