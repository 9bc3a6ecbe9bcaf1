"""Two control arms at the baseline's budget, so a heterogeneous strategy's result can be read.

* `placebo`: MHe-IHe with the tiers reversed. The tier that the config gives the most compute
  (largest size, then most steps) gets the least, and so on down the order: the "hard" lineage
  trains the small size for the fewest steps. If heterogeneity pays because it follows difficulty,
  the placebo does worse than the baseline; if it does as well as MHe-IHe, the tiers carry nothing.
* `one-iteration`: every expert at the baseline size and steps, each branching from its seed
  rather than from the previous expert of its lineage (BTM's single iteration). Nothing a lineage
  learned earlier can be forgotten, so it separates lineage forgetting from everything else; its
  final ensemble is every expert (none is branched from).

Both are homogeneous in the paper's sense: they appear in every table and are never counted as
heterogeneous wins (`control=True`).
"""

from __future__ import annotations

from pathlib import Path

from hdee.strategies.base import Assignment, ExpertSpec, Strategy, register
from hdee.strategies.hand import HeteroBoth
from hdee.strategies.measured import describe_tiers
from hdee.strategies.tier_order import reversed_tiers


@register("placebo", needs_sizes=True, needs_steps=True, control=True, order=6, describe=describe_tiers)
class Placebo(HeteroBoth):
    """MHe-IHe with each lineage's tier mirrored: the same budget, heterogeneity against difficulty."""

    def tier(self, lineage: str) -> str:
        return reversed_tiers(self.cfg, self.tier_sizes)[super().tier(lineage)]


@register("one-iteration", control=True, order=7)
class OneIteration(Strategy):
    """Baseline size and steps; every expert branches from the seed, so no lineage forgetting."""

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment:
        rule = self.cfg.budget.baseline
        return Assignment([
            ExpertSpec(e.lineage, e.iteration, e.domains, e.size, e.steps, from_seed=True)
            for e in self.lineage_experts(lambda lin, i: rule.size, lambda lin, i: rule.steps)
        ])
