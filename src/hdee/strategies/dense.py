"""BTM's compute-matched dense baseline: one model on the union of the training domains."""

from __future__ import annotations

from pathlib import Path

from hdee.strategies import ExpertSpec, Strategy, budget_flops, register, size_flops_per_step


@register("dense")
class Dense(Strategy):
    """One baseline-size model from the same seed, equal domain weights, the baseline's FLOPs."""

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> list[ExpertSpec]:
        cfg, size = self.cfg, self.cfg.budget.baseline.size
        steps = round(budget_flops(cfg, self.ctx.vocab) / size_flops_per_step(cfg, self.ctx.vocab, size))
        return [ExpertSpec("dense", 1, tuple(cfg.train_domains), size, steps, kind="dense")]
