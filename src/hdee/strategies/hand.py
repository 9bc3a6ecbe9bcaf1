"""The four hand-set strategies of the HDEE paper: model size and/or steps by domain tier.

MHe-IHe scales its varied steps by one common factor so that its domain phase costs what the
baseline's does. In the paper's family (non-embedding 92.0M / 113.3M / 134.5M) the unscaled
S@300 + M@400 + L@500 costs 3% more than 3 x M@400, so the factor there is about 0.97.
"""

from __future__ import annotations

from pathlib import Path

from hdee.budget import domain_target, expert_flops
from hdee.core.errors import PlanError
from hdee.strategies.base import Assignment, Strategy, register
from hdee.strategies.measured import MeasuredTiers, describe_tiers


@register("MHo-IHo", baseline=True, order=0, default=True)
class Baseline(Strategy):
    """Every expert at the baseline size and steps."""

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment:
        rule = self.cfg.budget.baseline
        return Assignment(self.lineage_experts(lambda lin, i: rule.size, lambda lin, i: rule.steps))


@register("MHo-IHe", needs_steps=True, heterogeneous=True, order=1, describe=describe_tiers, default=True)
class HeteroSteps(MeasuredTiers):
    """Baseline size; steps by tier in the iterations `budget.vary_steps_in` names."""

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment | None:
        if not self.measure(pilot_outputs):
            return None
        rule = self.cfg.budget.baseline
        return Assignment(self.fitted(self.lineage_experts(lambda lin, i: rule.size, self.tier_steps)), self.decision())

    def tier_steps(self, lineage: str, iteration: int) -> int:
        if self.steps_vary_in(iteration):
            return self.cfg.budget.steps[self.tier(lineage)]
        return self.cfg.budget.baseline.steps


@register("MHe-IHo", needs_sizes=True, heterogeneous=True, order=2, describe=describe_tiers, default=True)
class HeteroSize(MeasuredTiers):
    """Size by the lineage's tier for the whole lineage; baseline steps (scaled alike when its extra
    seed models, `budget.charge = "total"`, or its pilots, `budget.tiers = "measured"`, are paid for)."""

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment | None:
        if not self.measure(pilot_outputs):
            return None
        rule = self.cfg.budget.baseline
        raw = self.lineage_experts(lambda lin, i: self.tier_sizes[self.tier(lin)], lambda lin, i: rule.steps)
        return Assignment(self.fitted(raw), self.decision())


@register("MHe-IHe", needs_sizes=True, needs_steps=True, heterogeneous=True, order=3, describe=describe_tiers)
class HeteroBoth(HeteroSteps):
    """Size by tier and steps by tier, the varied steps scaled to the baseline's budget."""

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment | None:
        if not self.measure(pilot_outputs):
            return None
        cfg, vocab = self.cfg, self.ctx.vocab
        size_of = lambda lin, i: self.tier_sizes[self.tier(lin)]  # noqa: E731
        raw = self.lineage_experts(size_of, self.tier_steps)
        fixed = sum(expert_flops(cfg, vocab, e.size, e.steps) for e in raw if not self.steps_vary_in(e.iteration))
        varied = sum(expert_flops(cfg, vocab, e.size, e.steps) for e in raw if self.steps_vary_in(e.iteration))
        target = domain_target(cfg, vocab, {e.size for e in raw}) - self.pilot_flops() - fixed
        if target <= 0 or varied <= 0:
            raise PlanError(f"{self.name}: the budget cannot be matched (the fixed iterations already use it all)")
        factor = target / varied
        return Assignment(self.lineage_experts(
            size_of, lambda lin, i: round(self.tier_steps(lin, i) * factor) if self.steps_vary_in(i) else self.tier_steps(lin, i)
        ), self.decision())
