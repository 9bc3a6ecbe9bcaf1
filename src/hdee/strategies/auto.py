"""The `auto` strategy: measure each domain's difficulty with short pilots, then allocate.

Stage 1 (no pilot outputs yet): `pilots()` asks for one short branch run per training domain at
the baseline size, plus one single-step "anchor" run per other size (it makes the plan train
that size's seed model before the allocation is decided). Together they cost
`auto.pilot_fraction` of the domain-phase budget, and that cost is charged to this strategy.

Stage 2: `assign(pilot_outputs)` reads every pilot's `metrics.jsonl`, fits a loss-vs-tokens
curve per domain (hdee.allocate.fit_curve), transfers it to the other sizes with the seed models'
validation losses, and solves for a size per lineage and steps per (lineage, iteration) under
the budget left after the pilots (hdee.allocate.allocate). `self.decision` (also available from
`decide`) is the JSON-able record of all of it. See docs/auto.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hdee.allocate import Allocation, Curve, allocate, curves_by_size, fit_curve
from hdee.config import ExperimentConfig
from hdee.errors import PlanError
from hdee.strategies import (
    ExpertSpec,
    PilotSpec,
    Strategy,
    StrategyContext,
    budget_flops,
    expert_flops,
    register,
    size_flops_per_step,
)

METRICS = "metrics.jsonl"
RECORD = "hdee.json"


# ------------------------------------------------------------------------------ pilots


def pilot_specs(cfg: ExperimentConfig, vocab: int) -> list[PilotSpec]:
    """The measuring runs, sized so that together they cost about pilot_fraction of the budget."""
    auto = cfg.auto
    base = cfg.budget.baseline.size
    sizes = list(cfg.model.intermediate)
    domains = [d for lin in cfg.lineages for d in lin.domains]
    total = auto.pilot_fraction * budget_flops(cfg, vocab)
    pilot_sizes = sizes if auto.pilot_sizes == "all" else [base]
    anchors = [] if auto.pilot_sizes == "all" else [s for s in sizes if s != base]
    anchor_flops = sum(size_flops_per_step(cfg, vocab, s) for s in anchors)
    per_domain = sum(size_flops_per_step(cfg, vocab, s) for s in pilot_sizes)
    steps = math.floor((total - anchor_flops) / (len(domains) * per_domain))
    # a pilot of n steps yields n - 1 training-loss points after the first update plus its final
    # validation loss: n points in all
    if steps < auto.pilot_points:
        raise PlanError(
            f"auto: auto.pilot_fraction = {auto.pilot_fraction} buys {max(steps, 0)} pilot steps per domain and size, "
            f"fewer than auto.pilot_points = {auto.pilot_points}; raise auto.pilot_fraction or use auto.pilot_sizes = 'baseline'"
        )
    specs = [PilotSpec(name=f"{d}-{s}", domain=d, size=s, steps=steps) for d in domains for s in pilot_sizes]
    specs += [PilotSpec(name=f"anchor-{s}", domain=domains[0], size=s, steps=1) for s in anchors]
    return specs


def _rows(path: Path) -> list[dict]:
    """metrics.jsonl rows; a torn last line is ignored."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def pilot_points(pilot_dir: Path, tokens_per_step: int) -> tuple[list[float], list[float], float | None]:
    """(tokens, losses, seed loss) from one pilot's metrics.jsonl.

    Validation losses are placed at the tokens trained so far; the training loss of step k was
    measured on a fresh batch before that step's update, so it is placed at (k - 1) batches. The
    step-0 validation loss is the seed model's loss on the domain (returned separately; tokens = 0
    is outside the power law).
    """
    path = Path(pilot_dir) / METRICS
    if not path.is_file():
        raise PlanError(f"{path}: pilot metrics not found; rerun the pilot job")
    tokens: list[float] = []
    losses: list[float] = []
    seed = None
    for row in _rows(path):
        step = row.get("step")
        if not isinstance(step, int):
            continue
        val = row.get("val_loss")
        if isinstance(val, (int, float)):
            if step == 0:
                seed = float(val)
            else:
                tokens.append(float(row.get("tokens", step * tokens_per_step)))
                losses.append(float(val))
        train = row.get("loss")
        if isinstance(train, (int, float)) and step >= 2:
            tokens.append(float((step - 1) * tokens_per_step))
            losses.append(float(train))
    return tokens, losses, seed


def seed_val_loss(pilot_dir: Path) -> float:
    """Pooled validation loss (over the seed's domains) of the seed model a pilot branched from."""
    try:
        record = json.loads((Path(pilot_dir) / RECORD).read_text(encoding="utf-8"))
        parent = Path(record["parent"]["path"])
        seed = json.loads((parent / RECORD).read_text(encoding="utf-8"))
        value = float(seed["final_val_loss"])
    except (OSError, ValueError, KeyError, TypeError):
        raise PlanError(f"{pilot_dir}: cannot read the seed model's final_val_loss through {RECORD}") from None
    if not math.isfinite(value):
        raise PlanError(f"{pilot_dir}: the seed model's validation loss is {value}")
    return value


# ---------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class AutoDecision:
    """Everything the allocation used and chose; `to_dict()` is what reports show."""

    objective: str
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
    sizes = list(cfg.model.intermediate)
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
    lines = [
        f"auto ({decision['objective']}): pilots {decision['pilot_flops']:.3e} + experts {decision['expert_flops']:.3e} "
        f"= {decision['total_flops']:.3e} FLOPs ({decision['off_budget']:+.2%} vs budget {decision['budget_flops']:.3e})"
    ]
    for e in decision["experts"]:
        lines.append(
            f"  {e['lineage']} i{e['iteration']} {e['domain']}: {e['size']} x {e['steps']} steps, "
            f"predicted loss {e['predicted_loss']:.3f}"
        )
    return lines


# ---------------------------------------------------------------------------- strategy


@register("auto")
class Auto(Strategy):
    """Sizes and steps chosen from measured difficulty under the baseline's domain-phase budget."""

    def __init__(self, ctx: StrategyContext):
        super().__init__(ctx)
        self.decision: AutoDecision | None = None

    def pilots(self) -> list[PilotSpec]:
        return pilot_specs(self.cfg, self.ctx.vocab)

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> list[ExpertSpec] | None:
        if pilot_outputs is None:
            return None
        self.decision = decide(self.cfg, self.ctx.vocab, pilot_outputs)
        self.ctx.extras.setdefault("decisions", {})["auto"] = self.decision.to_dict()
        alloc = self.decision.allocation
        return self.lineage_experts(lambda lin, i: alloc.sizes[lin], lambda lin, i: alloc.steps[lin][i - 1])
