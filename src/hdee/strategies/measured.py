"""Tiers from measurement (`budget.tiers = "measured"`): the hand-set strategies deal their tiers by
the returns short pilots measure, instead of the config's labels.

Every training domain gets one pilot at the baseline size (`auto.pilot_fraction` of the budget
split evenly, at least `auto.pilot_points` steps), shared by every strategy that reads tiers (one
job, `PilotSpec.shared`). A domain's return is what half again the baseline's steps would gain:
the fitted curve (`hdee.strategies.auto.curves`) at the baseline's tokens minus at 1.5 times them.
A lineage's return is the mean over its domains. The config's tiers, ordered by the compute they
get (`controls.tier_ranks`), are dealt out again by return: the lineage that gains least gets the
least compute. Each strategy pays for the pilots out of its own domain phase (all its steps scaled
alike), as `auto` does, so it stays at the baseline's budget.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hdee.budget import budget_flops, domain_target, expert_flops, size_flops_per_step
from hdee.config import ExperimentConfig
from hdee.core.errors import PlanError
from hdee.strategies.base import ExpertSpec, PilotSpec, Strategy
from hdee.strategies.tier_order import deal_tiers

GAIN_OVER = 1.5  # the return is the gain from baseline steps to this many times them


def tier_pilots(cfg: ExperimentConfig, vocab: int) -> list[PilotSpec]:
    base = cfg.budget.baseline.size
    domains = [d for lin in cfg.lineages for d in lin.domains]
    steps = math.floor(cfg.auto.pilot_fraction * budget_flops(cfg, vocab) / (len(domains) * size_flops_per_step(cfg, vocab, base)))
    if steps < cfg.auto.pilot_points:
        raise PlanError(f"budget.tiers = 'measured': auto.pilot_fraction = {cfg.auto.pilot_fraction} buys {max(steps, 0)} "
                        f"pilot steps per domain, fewer than auto.pilot_points = {cfg.auto.pilot_points}")
    return [PilotSpec(name=f"tiers-{d}", domain=d, size=base, steps=steps, shared=True) for d in domains]


def domain_return(cfg: ExperimentConfig, pilot_dir: Path, domain: str) -> float:
    # auto's curve fit and pilot reader; imported here so that `hand` (imported first) does not register `auto`
    from hdee.strategies.auto.curves import fit_curve
    from hdee.strategies.auto.pilots import pilot_points

    tokens, losses, _ = pilot_points(pilot_dir, cfg.train.batch_tokens)
    curve = fit_curve(tokens, losses, where=f"pilot of {domain}")
    t = cfg.budget.baseline.steps * cfg.train.batch_tokens
    return curve.predict(t) - curve.predict(GAIN_OVER * t)


def describe_tiers(decision: dict[str, Any]) -> list[str]:
    """`hdee plan`'s line for a strategy that dealt its tiers by measured return."""
    if decision.get("tiers") != "measured":
        return []
    deals = ", ".join(f"{lin} {decision['hand'][lin]} -> {tier} (return {decision['returns'][lin]:.4f})"
                      for lin, tier in decision["dealt"].items())
    return [f"tiers from the pilots' measured returns (hand-set -> measured): {deals}"]


class MeasuredTiers(Strategy):
    """Mixin of the strategies that read tiers: measure first when `budget.tiers = "measured"`."""

    _dealt: dict[str, str] | None = None
    _returns: dict[str, float] | None = None

    @property
    def measuring(self) -> bool:
        return self.cfg.budget.tiers == "measured"

    def pilots(self) -> list[PilotSpec]:
        return tier_pilots(self.cfg, self.ctx.vocab) if self.measuring else []

    def measure(self, pilot_outputs: dict[str, Path] | None) -> bool:
        """Deal the tiers from the pilots; False while they have not run (the plan's stage 1)."""
        if not self.measuring:
            return True
        if pilot_outputs is None:
            return False
        by_domain = {d: domain_return(self.cfg, pilot_outputs[f"tiers-{d}"], d) for lin in self.cfg.lineages for d in lin.domains}
        self._returns = {lin.name: sum(by_domain[d] for d in lin.domains) / len(lin.domains) for lin in self.cfg.lineages}
        self._dealt = deal_tiers(self.cfg, self._returns, self.tier_sizes)
        return True

    def tier(self, lineage: str) -> str:
        return self._dealt[lineage] if self._dealt is not None else super().tier(lineage)

    def pilot_flops(self) -> float:
        return sum(expert_flops(self.cfg, self.ctx.vocab, p.size, p.steps) for p in self.pilots())

    def fitted(self, raw: list[ExpertSpec]) -> list[ExpertSpec]:
        """`raw` with every step count scaled alike so that pilots + experts spend the strategy's
        domain-phase target; `raw` itself when nothing is to be paid for (the hand-set default)."""
        cfg, vocab = self.cfg, self.ctx.vocab
        target = domain_target(cfg, vocab, {e.size for e in raw}) - self.pilot_flops()
        if target == budget_flops(cfg, vocab):
            return raw
        spent = sum(expert_flops(cfg, vocab, e.size, e.steps) for e in raw)
        if target <= 0:
            raise PlanError(f"{self.name}: its seed models and pilots use the whole budget")
        factor = target / spent
        return [ExpertSpec(e.lineage, e.iteration, e.domains, e.size, round(e.steps * factor), e.kind, e.from_seed) for e in raw]

    def decision(self) -> dict[str, Any] | None:
        if self._dealt is None:
            return None
        return {"tiers": "measured", "returns": self._returns, "dealt": self._dealt,
                "hand": {lin.name: lin.tier for lin in self.cfg.lineages}}
