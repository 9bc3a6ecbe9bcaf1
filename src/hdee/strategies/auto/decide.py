"""The `auto` strategy's decision: fit each pilot's curve, transfer it across sizes, allocate.

`decide` reads every pilot's metrics, fits a loss-vs-tokens curve per domain (`curves.fit_curve`),
transfers it to the other sizes with the seed models' validation losses, and solves for a size
per lineage and steps per (lineage, iteration) under the budget left after the pilots
(`solver.allocate`). `AutoDecision.to_dict()` is the JSON-able record of all of it. See docs/auto.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hdee.budget import budget_flops, expert_flops, size_flops_per_step
from hdee.config import ExperimentConfig
from hdee.core.errors import PlanError
from hdee.strategies.auto.curves import Curve, curves_by_size, fit_curve
from hdee.strategies.auto.pilots import pilot_points, pilot_specs, seed_val_loss
from hdee.strategies.auto.solver import Allocation, allocate


@dataclass(frozen=True)
class AutoDecision:
    """Everything the allocation used and chose; `to_dict()` is what reports show."""

    objective: str
    flops_convention: str  # the count budget_flops and every FLOP figure here are in (budget.flops)
    budget_flops: float
    pilot_flops: float
    allocation: Allocation
    curves: dict[str, dict[str, Curve]]
    seed_loss: dict[str, dict[str, float]]
    size_gap: dict[str, float]
    pilots: list[dict[str, Any]]
    experts: list[dict[str, Any]]

    @property
    def total_flops(self) -> float:
        return self.pilot_flops + self.allocation.flops

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": "auto",
            "objective": self.objective,
            "flops_convention": self.flops_convention,
            "budget_flops": self.budget_flops,
            "pilot_flops": self.pilot_flops,
            "expert_flops": self.allocation.flops,
            "total_flops": self.total_flops,
            "off_budget": self.total_flops / self.budget_flops - 1.0,
            "predicted_value": self.allocation.value,
            "predicted_loss": dict(self.allocation.predicted),
            "sizes": dict(self.allocation.sizes),
            "steps": {k: list(v) for k, v in self.allocation.steps.items()},
            "experts": self.experts,
            "pilots": self.pilots,
            "seed_loss": self.seed_loss,
            "size_gap": self.size_gap,
            "curves": {d: {s: c.to_dict() for s, c in by.items()} for d, by in self.curves.items()},
            "grid_flops": self.allocation.grid_flops,
            "topup_steps": self.allocation.topup_steps,
        }


def step_grid(cfg: ExperimentConfig) -> list[int]:
    base = cfg.budget.baseline.steps
    return sorted({max(1, round(base * f)) for f in cfg.auto.step_choices})


def decide(cfg: ExperimentConfig, vocab: int, pilot_outputs: Mapping[str, str | Path]) -> AutoDecision:
    """Fit the pilots' curves and allocate the rest of the budget (see the module docstring)."""
    specs = pilot_specs(cfg, vocab)
    missing = [p.name for p in specs if p.name not in pilot_outputs]
    if missing:
        raise PlanError(f"auto: pilot {missing[0]!r} has no output")
    tps = cfg.train.batch_tokens
    sizes = cfg.size_names
    base = cfg.budget.baseline.size
    fitted: dict[tuple[str, str], Curve] = {}
    seed_loss: dict[str, dict[str, float]] = {}
    pilots = []
    pilot_flops = 0.0
    pooled: dict[str, float] = {}
    for p in specs:
        out = Path(pilot_outputs[p.name])
        flops = expert_flops(cfg, vocab, p.size, p.steps)
        pilot_flops += flops
        pilots.append({"name": p.name, "domain": p.domain, "size": p.size, "steps": p.steps, "flops": flops})
        if cfg.auto.pilot_sizes == "baseline" and p.size not in pooled:
            pooled[p.size] = seed_val_loss(out)
        if p.name.startswith("anchor-"):
            continue
        tokens, losses, seed = pilot_points(out, tps)
        fitted[(p.domain, p.size)] = fit_curve(tokens, losses, where=f"auto pilot {p.name} ({out})")
        if seed is not None:
            seed_loss.setdefault(p.domain, {})[p.size] = seed

    size_gap: dict[str, float] = {}
    if cfg.auto.pilot_sizes == "baseline":
        # the other sizes' level on a domain: the baseline seed's loss there, scaled by the
        # seed models' pooled validation-loss ratio (a size helps every domain in proportion)
        for s in sizes:
            size_gap[s] = pooled[s] / pooled[base] - 1.0
        for d, by in seed_loss.items():
            for s in sizes:
                if s != base and base in by:
                    by.setdefault(s, by[base] * (1.0 + size_gap[s]))
    domains = [d for lin in cfg.lineages for d in lin.domains]
    curves = curves_by_size(fitted, seed_loss, domains, sizes)

    budget = budget_flops(cfg, vocab)
    step_flops = {s: size_flops_per_step(cfg, vocab, s) for s in sizes}
    alloc = allocate(
        {lin.name: list(lin.domains) for lin in cfg.lineages},
        curves,
        step_flops,
        tps,
        step_grid(cfg),
        budget - pilot_flops,
        objective=cfg.auto.objective,
    )
    experts = []
    for lin in cfg.lineages:
        size = alloc.sizes[lin.name]
        for i, (d, n) in enumerate(zip(lin.domains, alloc.steps[lin.name]), start=1):
            experts.append({
                "lineage": lin.name, "iteration": i, "domain": d, "size": size, "steps": n,
                "flops": step_flops[size] * n, "predicted_loss": alloc.predicted[d],
            })
    return AutoDecision(
        objective=cfg.auto.objective,
        flops_convention=cfg.budget.flops,
        budget_flops=budget,
        pilot_flops=pilot_flops,
        allocation=alloc,
        curves=curves,
        seed_loss=seed_loss,
        size_gap=size_gap,
        pilots=pilots,
        experts=experts,
    )


def describe(decision: Mapping[str, Any]) -> list[str]:
    """Human-readable lines of a decision dict (for `hdee plan` and reports)."""
    budget = decision["budget_flops"]
    lines = [
        f"auto ({decision['objective']}): pilots {decision['pilot_flops']:.3e} + experts {decision['expert_flops']:.3e} "
        f"= {decision['total_flops']:.3e} FLOPs ({decision['off_budget']:+.2%} vs budget {budget:.3e}, "
        f"{decision.get('flops_convention', 'paper')} count)"
    ]
    pilots = decision.get("pilots", [])
    measuring = sorted({p["steps"] for p in pilots if not p["name"].startswith("anchor-")})
    anchors = [p for p in pilots if p["name"].startswith("anchor-")]
    if pilots:
        lines.append(
            f"  pilots: {'/'.join(map(str, measuring))} steps per domain ({len(pilots) - len(anchors)} runs)"
            + (f"; {len(anchors)} one-step anchors cost {sum(p['flops'] for p in anchors) / budget:.2%} of the budget" if anchors else "")
        )
    for e in decision["experts"]:
        lines.append(
            f"  {e['lineage']} i{e['iteration']} {e['domain']}: {e['size']} x {e['steps']} steps, "
            f"predicted loss {e['predicted_loss']:.3f}"
        )
    return lines
