"""The compute allocation of the `auto` strategy: sizes and steps under a FLOP budget. Pure functions.

`allocate` picks one size per lineage and a step count per (lineage, iteration) from a discrete
grid, minimising the predicted mean (or worst) loss over the trained domains with the total
FLOPs at or under the budget. It is exact over the grid (dynamic programming over a budget
discretised in FLOP units, rounded up so the real total never exceeds the budget), then fills the
budget's remainder one step at a time by marginal gain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from hdee.core.errors import PlanError
from hdee.strategies.auto.curves import Curve

EXACT_UNITS = 8192  # budget/gcd of all costs at most this: the DP is exact, no rounding at all
DEFAULT_UNITS = 4096  # otherwise: this many units, each choice's cost rounded up

Objective = Literal["mean", "minimax"]


@dataclass(frozen=True)
class Allocation:
    """The decision: size per lineage, steps per (lineage, iteration), predicted loss per domain."""

    objective: str
    sizes: dict[str, str]
    steps: dict[str, list[int]]
    predicted: dict[str, float]
    flops: float
    budget: float
    value: float  # the objective: mean or worst predicted loss
    grid_flops: float  # FLOPs of the exact grid solution before the step-by-step fill
    topup_steps: int

    def to_dict(self) -> dict:
        return asdict(self)


def objective_value(losses: Sequence[float], objective: Objective) -> float:
    return float(max(losses)) if objective == "minimax" else float(sum(losses) / len(losses))


class _Problem:
    def __init__(self, lineages, curves, step_flops, tokens_per_step, step_grid, budget):
        self.lineages = {name: list(doms) for name, doms in lineages.items()}
        self.sizes = list(step_flops)
        self.step_flops = {s: float(f) for s, f in step_flops.items()}
        self.tps = int(tokens_per_step)
        self.grid = sorted({int(n) for n in step_grid if int(n) >= 1})
        self.budget = float(budget)
        self.curves = curves
        if not self.grid:
            raise PlanError("auto: the step grid is empty")
        for doms in self.lineages.values():
            for d in doms:
                missing = [s for s in self.sizes if s not in curves.get(d, {})]
                if missing:
                    raise PlanError(f"auto: no curve for domain {d!r} at size {missing[0]!r}")

    def loss(self, domain: str, size: str, steps: int) -> float:
        return self.curves[domain][size].predict(steps * self.tps)

    def units(self) -> tuple[float, int, bool]:
        """(FLOPs per budget unit, units in the budget, exact?)."""
        costs = [self.step_flops[s] * n for s in self.sizes for n in self.grid]
        if all(float(c).is_integer() for c in costs) and self.budget >= 1:
            g = 0
            for c in costs:
                g = math.gcd(g, int(c))
            if g and self.budget / g <= EXACT_UNITS:
                return float(g), int(self.budget // g), True
        return self.budget / DEFAULT_UNITS, DEFAULT_UNITS, False


def _solve_grid(p: _Problem, cap: float) -> tuple[dict[str, str], dict[str, list[int]]] | None:
    """Exact min of the summed loss over the grid, total cost <= budget, losses above `cap` barred.

    Per (lineage, size): a multiple-choice knapsack over its iterations on an exact-cost array;
    lineages are then combined by a min-plus convolution. Returns None if nothing is feasible.
    """
    unit, U, exact = p.units()
    kcost = {
        (s, n): (int(round(p.step_flops[s] * n / unit)) if exact else math.ceil(p.step_flops[s] * n / unit - 1e-9))
        for s in p.sizes
        for n in p.grid
    }
    inf = np.inf
    lineage_best: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    back: dict[tuple[str, str], list[np.ndarray]] = {}
    for lin, doms in p.lineages.items():
        best = np.full(U + 1, inf)
        best_size = np.full(U + 1, -1, dtype=np.int32)
        for si, s in enumerate(p.sizes):
            F = np.full(U + 1, inf)
            F[0] = 0.0
            args = []
            for d in doms:
                G = np.full(U + 1, inf)
                arg = np.full(U + 1, -1, dtype=np.int32)
                for ni, n in enumerate(p.grid):
                    k, v = kcost[(s, n)], p.loss(d, s, n)
                    if k > U or v > cap:
                        continue
                    cand = F[: U + 1 - k] + v
                    better = cand < G[k:]
                    G[k:][better] = cand[better]
                    arg[k:][better] = ni
                F = G
                args.append(arg)
            back[(lin, s)] = args
            better = F < best
            best[better] = F[better]
            best_size[better] = si
        lineage_best[lin] = (best, best_size)

    total = np.full(U + 1, inf)
    total[0] = 0.0
    used: list[np.ndarray] = []
    for lin in p.lineages:
        best, _ = lineage_best[lin]
        nxt = np.full(U + 1, inf)
        arg = np.full(U + 1, -1, dtype=np.int64)
        for c in np.flatnonzero(np.isfinite(best)):
            cand = total[: U + 1 - c] + best[c]
            better = cand < nxt[c:]
            nxt[c:][better] = cand[better]
            arg[c:][better] = c
        total = nxt
        used.append(arg)
    if not np.isfinite(total).any():
        return None
    b = int(np.argmin(total))  # lowest summed loss; ties: the cheaper one, the fill tops it up
    sizes: dict[str, str] = {}
    steps: dict[str, list[int]] = {}
    for li in range(len(p.lineages) - 1, -1, -1):
        lin = list(p.lineages)[li]
        c = int(used[li][b])
        s = p.sizes[int(lineage_best[lin][1][c])]
        sizes[lin] = s
        rem, chosen = c, []
        for arg in reversed(back[(lin, s)]):
            n = p.grid[int(arg[rem])]
            chosen.append(n)
            rem -= kcost[(s, n)]
        steps[lin] = list(reversed(chosen))
        b -= c
    return {k: sizes[k] for k in p.lineages}, {k: steps[k] for k in p.lineages}


def _cost(p: _Problem, sizes: Mapping[str, str], steps: Mapping[str, list[int]]) -> float:
    return sum(p.step_flops[sizes[lin]] * n for lin in p.lineages for n in steps[lin])


def _losses(p: _Problem, sizes, steps) -> dict[str, float]:
    return {d: p.loss(d, sizes[lin], n) for lin, doms in p.lineages.items() for d, n in zip(doms, steps[lin])}


def _top_up(p: _Problem, sizes, steps, objective: Objective) -> int:
    """Add single steps while one fits in the budget: best marginal gain per FLOP first
    (for minimax: the worst domain first). Returns how many steps were added."""
    added = 0
    spent = _cost(p, sizes, steps)
    slots = [(lin, i, d) for lin, doms in p.lineages.items() for i, d in enumerate(doms)]
    while True:
        room = p.budget - spent
        best_key, best_slot = None, None
        for lin, i, d in slots:
            f = p.step_flops[sizes[lin]]
            if f > room * (1 + 1e-12):
                continue
            n = steps[lin][i]
            now = p.loss(d, sizes[lin], n)
            gain = (now - p.loss(d, sizes[lin], n + 1)) / f
            key = (now, gain) if objective == "minimax" else (gain, -f)
            if best_key is None or key > best_key:
                best_key, best_slot = key, (lin, i)
        if best_slot is None:
            return added
        lin, i = best_slot
        steps[lin][i] += 1
        spent += p.step_flops[sizes[lin]]
        added += 1


def allocate(
    lineages: Mapping[str, Sequence[str]],
    curves: Mapping[str, Mapping[str, Curve]],
    step_flops: Mapping[str, float],
    tokens_per_step: int,
    step_grid: Sequence[int],
    budget: float,
    objective: Objective = "mean",
    fill: bool = True,
) -> Allocation:
    """Size per lineage and steps per (lineage, iteration) minimising the predicted objective.

    `lineages`: lineage -> its domains in iteration order. `curves[domain][size]`: predicted loss
    against tokens. `step_flops[size]`: FLOPs of one optimizer step (the sizes to choose from).
    Total FLOPs never exceed `budget`; with `fill`, single steps are added afterwards until no
    further step of the lineage's size fits, so the slack is under one step of the smallest size.
    """
    if budget <= 0:
        raise PlanError(f"auto: no budget left for the experts ({budget:.3e} FLOPs)")
    if not lineages or not step_flops:
        raise PlanError("auto: nothing to allocate (no lineage or no size)")
    p = _Problem(lineages, curves, step_flops, tokens_per_step, step_grid, budget)
    cap = math.inf
    if objective == "minimax":
        # the smallest worst-domain loss that is feasible, then the best mean under it
        values = sorted({p.loss(d, s, n) for doms in p.lineages.values() for d in doms for s in p.sizes for n in p.grid})
        lo, hi = 0, len(values) - 1
        if _solve_grid(p, values[hi]) is None:
            raise _too_small(p)
        while lo < hi:
            mid = (lo + hi) // 2
            if _solve_grid(p, values[mid]) is None:
                lo = mid + 1
            else:
                hi = mid
        cap = values[lo]
    elif objective != "mean":
        raise PlanError(f"auto: unknown objective {objective!r} (mean or minimax)")
    solved = _solve_grid(p, cap)
    if solved is None:
        raise _too_small(p)
    sizes, steps = solved
    grid_flops = _cost(p, sizes, steps)
    added = _top_up(p, sizes, steps, objective) if fill else 0
    losses = _losses(p, sizes, steps)
    return Allocation(
        objective=objective,
        sizes=sizes,
        steps=steps,
        predicted=losses,
        flops=_cost(p, sizes, steps),
        budget=p.budget,
        value=objective_value(list(losses.values()), objective),
        grid_flops=grid_flops,
        topup_steps=added,
    )


def _too_small(p: _Problem) -> PlanError:
    cheapest = min(p.step_flops.values()) * p.grid[0] * sum(len(d) for d in p.lineages.values())
    return PlanError(
        f"auto: {p.budget:.3e} FLOPs cannot pay for the cheapest allocation ({cheapest:.3e}); "
        "lower auto.pilot_fraction or add a smaller auto.step_choices"
    )
