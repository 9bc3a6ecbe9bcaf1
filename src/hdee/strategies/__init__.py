"""Strategies: each turns the experiment config into the experts it trains under the budget.

A strategy is a small class registered by name with `@register("name")`. The plan
(`hdee.plan.build_plan`) asks every strategy named in `cfg.strategies` for its experts and turns
them into jobs; strategies never run anything themselves.

Writing a strategy
------------------
Subclass `Strategy`, decorate it with `@register("my-name")`, put it in its own module under
`hdee/strategies/` and add one import line at the bottom of this file. Implement:

* `assign(pilot_outputs)` -> `list[ExpertSpec]`: one spec per (lineage, iteration), each with
  a size and a step count; the expert of iteration i > 1 branches from the lineage's expert of
  iteration i - 1, the first one from the seed model of its size (so a lineage keeps one size).
  A strategy that trains one model on the union of the domains returns a single spec with
  `kind="dense"` and `domains` set to those domains.

Pilot jobs (the plug-in point for strategies that measure before they decide)
-----------------------------------------------------------------------------
A strategy may override `pilots()` to declare extra branch-train jobs whose measured results it
needs (for example short runs of each domain at each size). Each `PilotSpec` names a domain, a
size and a step count; a pilot branches from the seed model of its size and is trained like any
expert. Its FLOPs are charged to the strategy's domain phase.

The plan is then built in stages. Without the pilots' outputs, `assign` is called with
`pilot_outputs=None` and must return `None` ("pending"): stage 1 holds the pilots and every job
of the other strategies. Once the pilots have run, the plan is rebuilt and `assign` is called
with `pilot_outputs = {pilot name: expert dir}`; every dir holds `hdee.json` (size, steps,
tokens, FLOPs, ...) and `metrics.jsonl` (the train and validation loss curve). The strategy must
then return its experts, and the whole plan, pilots included, must fit the budget
(`domain_flops` of the baseline, within `cfg.budget.tolerance`). `budget_flops(cfg, vocab)` and
`expert_flops(...)` in this module give the numbers to aim at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal

from hdee.config import ExperimentConfig
from hdee.errors import PlanError


@dataclass(frozen=True)
class ExpertSpec:
    """One expert a strategy trains: (lineage, iteration) -> size and steps (1-based iteration)."""

    lineage: str
    iteration: int
    domains: tuple[str, ...]
    size: str
    steps: int
    kind: Literal["train", "dense"] = "train"

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise PlanError(f"expert {self.lineage} iteration {self.iteration} gets {self.steps} steps; the budget cannot be matched")


@dataclass(frozen=True)
class PilotSpec:
    """A measuring run a strategy needs before it can assign its experts."""

    name: str
    domain: str
    size: str
    steps: int


@dataclass
class StrategyContext:
    """What a strategy may use to decide: the config and the vocab (for FLOP accounting)."""

    cfg: ExperimentConfig
    vocab: int
    extras: dict = field(default_factory=dict)


class Strategy:
    """Base class; see the module docstring for how to write one."""

    name: ClassVar[str] = ""

    def __init__(self, ctx: StrategyContext):
        self.ctx = ctx
        self.cfg = ctx.cfg

    def pilots(self) -> list[PilotSpec]:
        return []

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> list[ExpertSpec] | None:
        raise NotImplementedError

    # helpers shared by the built-in strategies
    def lineage_experts(self, size_of: Callable[[str, int], str], steps_of: Callable[[str, int], int]) -> list[ExpertSpec]:
        """One ExpertSpec per (lineage, iteration) with size_of(lineage, i) and steps_of(lineage, i)."""
        out = []
        for lin in self.cfg.lineages:
            for i, dom in enumerate(lin.domains, start=1):
                out.append(ExpertSpec(lin.name, i, (dom,), size_of(lin.name, i), steps_of(lin.name, i)))
        return out

    def tier(self, lineage: str) -> str:
        for lin in self.cfg.lineages:
            if lin.name == lineage:
                return lin.tier
        raise PlanError(f"unknown lineage {lineage!r}")

    def steps_vary_in(self, iteration: int) -> bool:
        """Whether tier-dependent steps apply in this iteration (`budget.vary_steps_in`)."""
        return self.cfg.budget.vary_steps_in == "all" or iteration == self.cfg.iterations


_REGISTRY: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def deco(cls: type[Strategy]) -> type[Strategy]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"strategy {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def strategy_names() -> list[str]:
    return list(_REGISTRY)


def get_strategy(name: str, ctx: StrategyContext) -> Strategy:
    if name not in _REGISTRY:
        raise PlanError(f"unknown strategy {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](ctx)


def size_flops_per_step(cfg: ExperimentConfig, vocab: int, size: str) -> float:
    """Budget FLOPs of one optimizer step of `size` (6 x non-embedding params x batch tokens)."""
    from hdee.model import SizeSpec, flops_per_token

    spec = SizeSpec.from_family(cfg.model, size, vocab, cfg.data.seq_len)
    return flops_per_token(spec) * cfg.train.batch_tokens


def expert_flops(cfg: ExperimentConfig, vocab: int, size: str, steps: int) -> float:
    return size_flops_per_step(cfg, vocab, size) * steps


def budget_flops(cfg: ExperimentConfig, vocab: int) -> float:
    """The domain-phase budget: every (lineage, iteration) at the baseline size and steps."""
    rule = cfg.budget.baseline
    return len(cfg.lineages) * cfg.iterations * expert_flops(cfg, vocab, rule.size, rule.steps)


# Built-in strategies register themselves on import. One line per strategy module.
from hdee.strategies import hand  # noqa: E402,F401
from hdee.strategies import dense  # noqa: E402,F401
from hdee.strategies import auto  # noqa: E402,F401
