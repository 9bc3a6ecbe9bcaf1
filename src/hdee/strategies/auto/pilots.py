"""The `auto` strategy's pilots: short measuring runs, and what is read back from their expert dirs.

`pilot_specs` asks for one short branch run per training domain at the baseline size, plus one
single-step "anchor" run per other size (it makes the plan train that size's seed model before the
allocation is decided). Together they cost `auto.pilot_fraction` of the domain-phase budget.
"""

from __future__ import annotations

import math
from pathlib import Path

from hdee.budget import budget_flops, size_flops_per_step
from hdee.config import ExperimentConfig
from hdee.core.errors import PlanError
from hdee.expert_dir import RECORD, load_record, metrics_path, read_metrics
from hdee.strategies.base import PilotSpec


def pilot_specs(cfg: ExperimentConfig, vocab: int) -> list[PilotSpec]:
    """The measuring runs, sized so that together they cost about pilot_fraction of the budget."""
    auto = cfg.auto
    base = cfg.budget.baseline.size
    sizes = cfg.size_names
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


def pilot_points(pilot_dir: Path, tokens_per_step: int) -> tuple[list[float], list[float], float | None]:
    """(tokens, losses, seed loss) from one pilot's metrics.jsonl.

    Validation losses are placed at the tokens trained so far; the training loss of step k was
    measured on a fresh batch before that step's update, so it is placed at (k - 1) batches. The
    step-0 validation loss is the seed model's loss on the domain (returned separately; tokens = 0
    is outside the power law).
    """
    path = metrics_path(pilot_dir)
    if not path.is_file():
        raise PlanError(f"{path}: pilot metrics not found; rerun the pilot job")
    tokens: list[float] = []
    losses: list[float] = []
    seed = None
    for row in read_metrics(path):
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
        parent = Path(load_record(pilot_dir).parent.path)  # type: ignore[union-attr]
        if not parent.is_dir():  # a run directory moved since: the seed sits beside the pilot
            parent = pilot_dir.parent / parent.name
        value = float(load_record(parent).final_val_loss)  # type: ignore[arg-type]
    except (OSError, ValueError, AttributeError, TypeError):
        raise PlanError(f"{pilot_dir}: cannot read the seed model's final_val_loss through {RECORD}") from None
    if not math.isfinite(value):
        raise PlanError(f"{pilot_dir}: the seed model's validation loss is {value}")
    return value
