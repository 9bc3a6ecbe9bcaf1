"""BTM's compute-matched dense baseline: one model on the union of the training domains."""

from __future__ import annotations

from pathlib import Path

from hdee.budget import budget_flops, size_flops_per_step
from hdee.strategies.base import Assignment, ExpertSpec, Strategy, register


@register("dense", single_model=True, order=5, default=True)
class Dense(Strategy):
    """One baseline-size model from the same seed, equal domain weights, the baseline's FLOPs."""

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment:
        cfg, size = self.cfg, self.cfg.budget.baseline.size
        steps = round(budget_flops(cfg, self.ctx.vocab) / size_flops_per_step(cfg, self.ctx.vocab, size))
        return Assignment([ExpertSpec("dense", 1, tuple(cfg.train_domains), size, steps, kind="dense")])
