"""What a strategy is: it turns the experiment config into the experts it trains under the budget.

A strategy is a small class registered by name, with its traits, in `hdee.registry.STRATEGIES`
(one call: `register(name, cls, **traits)`, or `@register(name, **traits)` on the class). The
plan (`hdee.plan.build_plan`) asks every strategy named in `cfg.strategies` for its experts and
turns them into jobs; strategies never run anything themselves.

Writing a strategy
------------------
Subclass `Strategy` and register it: built-ins in their own module under `hdee/strategies/`
(imported by this package), anything else in a plugin module the config names in `plugins`.
Implement `assign(pilot_outputs)` -> `Assignment`: one `ExpertSpec` per (lineage, iteration), each
with a size and a step count; the expert of iteration i > 1 branches from the lineage's expert of
iteration i - 1, the first one from the seed model of its size (so a lineage keeps one size);
`from_seed=True` makes any iteration branch from the seed instead (then it is a final expert).
A strategy that trains one model on the union of the domains returns a single spec with
`kind="dense"` and `domains` set to those domains. A strategy that measured something to decide
returns that decision (JSON-able) beside its experts, and registers `describe` to print it.

Pilot jobs (the plug-in point for strategies that measure before they decide)
-----------------------------------------------------------------------------
A strategy may override `pilots()` to declare extra branch-train jobs whose measured results it
needs (for example short runs of each domain at each size). Each `PilotSpec` names a domain, a
size and a step count; a pilot branches from the seed model of its size and is trained like any
expert. Its FLOPs are charged to the strategy's domain phase.

The plan is then built in stages. Without the pilots' outputs, `assign` is called with
`pilot_outputs=None` and must return `None` ("pending"): stage 1 holds the pilots and every job
of the other strategies. Once the pilots have run, the plan is rebuilt and `assign` is called
with `pilot_outputs = {pilot name: expert dir}`; every dir is a finished expert directory
(`hdee.expert_dir`: its `ExpertRecord` and its metrics). The strategy must then return its
experts, and the whole plan, pilots included, must fit the budget (`domain_flops` of the
baseline, within `cfg.budget.tolerance`); `hdee.budget` gives the numbers to aim at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from hdee.config import ExperimentConfig
from hdee.core.errors import PlanError
from hdee.registry import STRATEGIES, StrategyEntry


@dataclass(frozen=True)
class ExpertSpec:
    """One expert a strategy trains: (lineage, iteration) -> size and steps (1-based iteration)."""

    lineage: str
    iteration: int
    domains: tuple[str, ...]
    size: str
    steps: int
    kind: Literal["train", "dense"] = "train"
    from_seed: bool = False  # branch from the seed model of its size, not from iteration - 1 of its lineage

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
    shared: bool = False  # one job for every strategy that asks for the same pilot (named by `name` alone)


@dataclass(frozen=True)
class Assignment:
    """What a strategy decided: its experts, and the record of how it chose them when it measured
    anything first (JSON-able; None for strategies that follow fixed rules)."""

    experts: list[ExpertSpec]
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may use to decide: the config and the vocab (for FLOP accounting)."""

    cfg: ExperimentConfig
    vocab: int


class Strategy:
    """Base class; see the module docstring for how to write one."""

    name: ClassVar[str] = ""
    spread: ClassVar[str | None] = None  # a named size spread (`budget.spreads`) instead of `budget.sizes`

    def __init__(self, ctx: StrategyContext):
        self.ctx = ctx
        self.cfg = ctx.cfg

    def pilots(self) -> list[PilotSpec]:
        return []

    def assign(self, pilot_outputs: dict[str, Path] | None = None) -> Assignment | None:
        raise NotImplementedError

    # helpers shared by the built-in strategies
    def lineage_experts(self, size_of: Callable[[str, int], str], steps_of: Callable[[str, int], int]) -> list[ExpertSpec]:
        """One ExpertSpec per (lineage, iteration) with size_of(lineage, i) and steps_of(lineage, i)."""
        out = []
        for lin in self.cfg.lineages:
            for i, dom in enumerate(lin.domains, start=1):
                out.append(ExpertSpec(lin.name, i, (dom,), size_of(lin.name, i), steps_of(lin.name, i)))
        return out

    @property
    def tier_sizes(self) -> dict[str, str]:
        """tier -> size: `budget.sizes`, or the strategy's spread in `budget.spreads`."""
        return self.cfg.budget.spreads[self.spread] if self.spread else self.cfg.budget.sizes

    def tier(self, lineage: str) -> str:
        for lin in self.cfg.lineages:
            if lin.name == lineage:
                return lin.tier
        raise PlanError(f"unknown lineage {lineage!r}")

    def steps_vary_in(self, iteration: int) -> bool:
        """Whether tier-dependent steps apply in this iteration (`budget.vary_steps_in`)."""
        return self.cfg.budget.vary_steps_in == "all" or iteration == self.cfg.iterations


def register(name: str, cls: type[Strategy] | None = None, **traits: Any) -> Any:
    """Register strategy `cls` under `name` with its traits (`hdee.registry.StrategyEntry`'s fields).

    `register(name, cls, ...)` registers at once; `@register(name, ...)` decorates the class.
    """

    def add(c: type[Strategy]) -> type[Strategy]:
        if traits.get("default") and not c.__module__.startswith("hdee.strategies."):
            raise ValueError(f"strategy {name!r}: only hdee's own strategies may be default (a config names plugins' ones)")
        STRATEGIES.add(StrategyEntry(name=name, cls=c, **traits))
        c.name = name
        return c

    return add(cls) if cls is not None else add


def get_strategy(name: str, ctx: StrategyContext) -> Strategy:
    return STRATEGIES.get(name).cls(ctx)
