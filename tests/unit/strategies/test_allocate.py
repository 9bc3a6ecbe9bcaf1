"""Difficulty curves and the allocation solver of `auto` (hdee.strategies.auto.curves / .solver):
pure numbers, no I/O."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hdee.core.errors import PlanError
from hdee.strategies.auto.curves import Curve, curves_by_size, fit_curve
from hdee.strategies.auto.solver import allocate, objective_value

# --------------------------------------------------------------------------- curve fitting


def test_fit_recovers_a_known_curve():
    t = np.arange(1, 11) * 4096.0
    truth = Curve(E=1.7, A=0.9, alpha=0.45, t_ref=float(t.max()))
    y = [truth.predict(x) for x in t]
    c = fit_curve(t, y)
    assert c.kind == "fit"
    assert c.E == pytest.approx(1.7, abs=0.03)
    assert c.alpha == pytest.approx(0.45, rel=0.1)
    # the extrapolation to 5x the pilot's tokens stays close to the truth
    assert c.predict(5 * t.max()) == pytest.approx(truth.predict(5 * t.max()), abs=0.01)


def test_fit_is_robust_to_one_outlier():
    t = np.arange(1, 13) * 1000.0
    truth = Curve(E=2.0, A=1.0, alpha=0.5, t_ref=float(t.max()))
    y = np.array([truth.predict(x) for x in t])
    y[5] += 1.5  # one wild batch
    c = fit_curve(t, y)
    assert c.predict(t.max()) == pytest.approx(truth.predict(t.max()), abs=0.05)
    assert c.predict(4 * t.max()) == pytest.approx(truth.predict(4 * t.max()), abs=0.08)


def test_flat_curve_is_flat_and_does_not_crash():
    c = fit_curve([1000, 2000, 3000, 4000], [3.0, 3.0, 3.0, 3.0])
    assert c.kind == "flat" and c.A == 0.0
    assert c.predict(1) == c.predict(1e12) == pytest.approx(3.0)


def test_rising_loss_gives_flat_curve():
    c = fit_curve([1000, 2000, 3000], [3.0, 3.1, 3.3])
    assert c.A == 0.0
    assert c.predict(10_000) == pytest.approx(np.mean([3.0, 3.1, 3.3]))


def test_single_point_and_one_token_count():
    one = fit_curve([4096], [2.5])
    assert one.kind == "flat" and one.predict(1e9) == 2.5 and one.points == 1
    same = fit_curve([4096, 4096], [2.0, 3.0])
    assert same.kind == "flat" and same.predict(1) == pytest.approx(2.5)


def test_non_finite_points_dropped_and_none_left_is_an_error():
    c = fit_curve([0, 1000, 2000, 3000], [9.0, float("nan"), 2.0, 2.0])
    assert c.points == 2 and c.predict(5000) == pytest.approx(2.0)
    with pytest.raises(PlanError, match="pilot x"):
        fit_curve([1000, 2000], [float("inf"), float("nan")], where="pilot x")
    with pytest.raises(PlanError):
        fit_curve([1, 2], [1.0])


def test_curve_roundtrips_through_json_dict():
    c = fit_curve([1, 2, 3, 4], [3.0, 2.5, 2.3, 2.2])
    assert Curve.from_dict(c.to_dict()) == c


def test_curves_by_size_shifts_by_the_seed_gap():
    base = Curve(E=2.0, A=1.0, alpha=0.5, t_ref=100.0)
    out = curves_by_size({("d", "M"): base}, {"d": {"S": 3.2, "M": 3.0, "L": 2.9}}, ["d"], ["S", "M", "L"])
    assert out["d"]["M"] is base
    assert out["d"]["S"].predict(50) - base.predict(50) == pytest.approx(0.2)
    assert out["d"]["L"].predict(50) - base.predict(50) == pytest.approx(-0.1)
    with pytest.raises(PlanError, match="size 'L'"):
        curves_by_size({("d", "M"): base}, {"d": {"S": 3.2, "M": 3.0}}, ["d"], ["S", "M", "L"])


# ------------------------------------------------------------------------------ allocation


SIZES = {"S": 3, "M": 4, "L": 5}  # FLOPs per step in the paper's 3:4:5 MLP ratio, small integers


def _curves(levels: dict[str, float], size_gain: float = 0.15, speed: dict[str, float] | None = None):
    speed = speed or {}
    return {
        d: {
            s: Curve(E=max(0.1, lvl - size_gain * k), A=speed.get(d, 1.0) * lvl, alpha=0.5, t_ref=100.0)
            for k, s in enumerate(SIZES)
        }
        for d, lvl in levels.items()
    }


LINEAGES = {"easy": ["e1", "e2"], "hard": ["h1", "h2"]}
CURVES = _curves({"e1": 1.0, "e2": 1.2, "h1": 3.0, "h2": 3.5}, speed={"h1": 1.5, "h2": 1.5})
GRID = [5, 8, 10, 12, 15]
BUDGET = 4 * SIZES["M"] * 10  # four experts at M x 10 steps


def brute_force(lineages, curves, step_flops, tokens_per_step, grid, budget, objective) -> float | None:
    """The best objective over every grid allocation within the budget (small problems only)."""
    names = list(lineages)
    grid = sorted({int(n) for n in grid if int(n) >= 1})
    best = None
    for size_pick in itertools.product(list(step_flops), repeat=len(names)):
        slots = [(size, d) for lin, size in zip(names, size_pick) for d in lineages[lin]]
        for steps in itertools.product(grid, repeat=len(slots)):
            if sum(step_flops[s] * n for (s, _), n in zip(slots, steps)) > budget * (1 + 1e-12):
                continue
            losses = [curves[d][s].predict(n * tokens_per_step) for (s, d), n in zip(slots, steps)]
            v = objective_value(losses, objective)
            if best is None or v < best - 1e-12:
                best = v
    return best


@pytest.mark.parametrize("objective", ["mean", "minimax"])
@pytest.mark.parametrize("budget", [BUDGET, BUDGET - 7, BUDGET + 13, 70])
def test_grid_solution_matches_brute_force(objective, budget):
    got = allocate(LINEAGES, CURVES, SIZES, 10, GRID, budget, objective=objective, fill=False)
    want = brute_force(LINEAGES, CURVES, SIZES, 10, GRID, budget, objective=objective)
    assert want is not None
    assert got.value == pytest.approx(want, abs=1e-12)
    assert got.flops <= budget
    assert got.value == pytest.approx(objective_value(list(got.predicted.values()), objective))


def test_harder_lineage_gets_more_when_it_pays_more():
    a = allocate(LINEAGES, CURVES, SIZES, 10, GRID, BUDGET)
    hard = sum(a.steps["hard"]) * SIZES[a.sizes["hard"]]
    easy = sum(a.steps["easy"]) * SIZES[a.sizes["easy"]]
    assert hard > easy


def test_known_optimum_size_only():
    # one iteration, steps fixed to one choice: the size decision alone. The budget pays for one L
    # and one S; the hard domain gains far more from size, so the optimum is hard=L, easy=S.
    curves = _curves({"e1": 1.0, "h1": 3.0})
    curves["h1"] = {s: Curve(E=3.0 - 0.8 * k, A=1.0, alpha=0.5, t_ref=100.0) for k, s in enumerate(SIZES)}
    a = allocate({"easy": ["e1"], "hard": ["h1"]}, curves, SIZES, 10, [10], 80, fill=False)
    assert a.sizes == {"easy": "S", "hard": "L"}
    assert a.flops == 80


@pytest.mark.parametrize("objective", ["mean", "minimax"])
@pytest.mark.parametrize("budget", [BUDGET, BUDGET - 7, BUDGET + 13])
def test_fill_spends_budget_to_within_one_step(objective, budget):
    a = allocate(LINEAGES, CURVES, SIZES, 10, GRID, budget, objective=objective)
    assert a.flops <= budget
    assert budget - a.flops < min(SIZES[s] for s in a.sizes.values())
    assert a.flops >= a.grid_flops
    # filling only adds steps: it never makes the objective worse than the grid solution
    grid = allocate(LINEAGES, CURVES, SIZES, 10, GRID, budget, objective=objective, fill=False)
    assert a.value <= grid.value + 1e-12


def test_realistic_flops_within_tolerance():
    # the embedded family's per-step FLOPs (hidden 128, 4 layers, 4096 tokens): not small integers,
    # so the budget is discretised; the filled result must still be <= budget and within 1%
    nonemb = {"S": 4 * (4 * 128 * 128 + 3 * 128 * 384 + 256) + 128}
    nonemb["M"] = 4 * (4 * 128 * 128 + 3 * 128 * 512 + 256) + 128
    nonemb["L"] = 4 * (4 * 128 * 128 + 3 * 128 * 640 + 256) + 128
    flops = {s: 6.0 * n * 4096 for s, n in nonemb.items()}
    lineages = {f"l{k}": [f"d{k}{i}" for i in range(3)] for k in range(3)}
    levels = {d: 2.0 + 0.3 * k + 0.1 * i for k, lin in enumerate(lineages.values()) for i, d in enumerate(lin)}
    curves = {d: {s: Curve(E=lvl - 0.1 * j, A=lvl, alpha=0.3, t_ref=4096 * 40.0) for j, s in enumerate(flops)} for d, lvl in levels.items()}
    budget = 0.9 * 9 * 40 * flops["M"]
    for objective in ("mean", "minimax"):
        a = allocate(lineages, curves, flops, 4096, [20, 30, 40, 50, 60], budget, objective=objective)
        assert a.flops <= budget
        assert a.flops >= budget * 0.995
        assert set(a.sizes.values()) <= set(flops)
        assert all(len(v) == 3 and min(v) >= 1 for v in a.steps.values())


def test_flat_curves_still_fill_the_budget():
    flat = {d: {s: Curve(E=2.0, A=0.0, alpha=0.0, t_ref=1.0, kind="flat") for s in SIZES} for d in ("e1", "e2", "h1", "h2")}
    a = allocate(LINEAGES, flat, SIZES, 10, GRID, BUDGET)
    assert a.value == pytest.approx(2.0)
    assert BUDGET - a.flops < 3


def test_budget_too_small_is_a_plan_error():
    with pytest.raises(PlanError, match="cheapest allocation"):
        allocate(LINEAGES, CURVES, SIZES, 10, GRID, 10)
    with pytest.raises(PlanError, match="no budget"):
        allocate(LINEAGES, CURVES, SIZES, 10, GRID, -5.0)
    with pytest.raises(PlanError, match="no curve"):
        allocate({"x": ["nope"]}, CURVES, SIZES, 10, GRID, BUDGET)


def test_allocation_is_json_able_and_deterministic():
    import json

    a = allocate(LINEAGES, CURVES, SIZES, 10, GRID, BUDGET)
    b = allocate(LINEAGES, CURVES, SIZES, 10, GRID, BUDGET)
    assert a == b
    d = json.loads(json.dumps(a.to_dict()))
    assert d["sizes"] == a.sizes and math.isclose(d["flops"], a.flops)
