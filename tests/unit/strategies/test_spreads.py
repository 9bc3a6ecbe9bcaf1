"""A close and a far size spread side by side, and the trend test of the endpoint across spreads."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from hdee.config import ExperimentConfig
from hdee.plan import build_plan
from hdee.report.spread import spread_trends

VOCAB = 512


def far_config(tiny, strategies=("MHo-IHo", "MHe-IHo", "MHe-IHo.far", "placebo.far", "MHe-IHe", "placebo")):
    raw = tiny.model_dump(mode="json")
    raw["model"]["intermediate"] = {"XS": 32, "S": 48, "M": 64, "L": 80, "XL": 96}
    raw["budget"]["spreads"] = {"far": {"easy": "XS", "hard": "XL"}}
    raw["strategies"] = list(strategies)
    return ExperimentConfig.model_validate(raw)


def test_a_far_spread_runs_beside_the_close_one_at_the_same_budget(tiny):
    cfg = far_config(tiny)
    plan = build_plan(cfg, VOCAB)
    sizes = {s: set(plan.ensembles[s].sizes_needed) for s in cfg.strategies}
    assert sizes["MHe-IHo"] == {"S", "L"} and sizes["MHe-IHo.far"] == {"XS", "XL"} and sizes["placebo.far"] == {"XS", "XL"}
    far = {j.lineage: j.size for j in plan.jobs if j.kind == "train" and "placebo.far" in j.used_by}
    assert far == {"easy": "XL", "hard": "XS"}  # the placebo mirrors the far spread too
    base = plan.ensembles["MHo-IHo"].domain_flops
    for s in cfg.strategies:
        assert abs(plan.ensembles[s].domain_flops / base - 1) <= cfg.budget.tolerance, s
    # a config without spreads dumps as before; a spread that is not defined is one clear error
    assert "spreads" not in tiny.model_dump(mode="json")["budget"]
    raw = tiny.model_dump(mode="json")
    raw["strategies"] = ["MHo-IHo", "MHe-IHo.wide"]
    with pytest.raises(ValueError, match="names spread 'wide', which budget.spreads does not define"):
        ExperimentConfig.model_validate(raw)
    raw = cfg.model_dump(mode="json")
    raw["budget"]["spreads"]["far"] = {"easy": "XS"}
    with pytest.raises(ValueError, match="budget.spreads.far has no entry for tier 'hard'"):
        ExperimentConfig.model_validate(raw)


def _results(endpoints: dict[str, float], spread: dict[str, tuple[float, float]]) -> dict:
    """Results of one repeat: two trained domains, each strategy's ppl a fixed ratio to the baseline's."""
    domains = [{"name": d, "role": "train"} for d in ("a", "b")]
    experts, ensembles = {}, {}
    for s, diff in endpoints.items():
        ids = []
        for k, per_token in enumerate(spread.get(s, (6.0, 6.0))):
            eid = f"{s}-{k}"
            experts[eid] = {"meta": {"kind": "train", "flops": per_token * 100, "tokens": 100}, "ppl": {}}
            ids.append(eid)
        ensembles[s] = {"experts": ids, "ppl": {"uniform": {"a": 30 * math.exp(diff), "b": 40 * math.exp(diff)}}}
    return {"domains": domains, "experts": experts, "ensemble": "final", "ensembles": ensembles,
            "method_choice": {"method": "uniform", "chosen_on": "val"}}


def test_trend_across_spreads_is_the_least_squares_slope():
    spread = {"MHe-IHo": (5.0, 7.0), "MHe-IHo.far": (3.0, 9.0)}
    runs = [_results({"MHo-IHo": 0.0, "MHe-IHo": a, "MHe-IHo.far": b}, spread)
            for a, b in ((-0.01, -0.03), (-0.012, -0.025), (-0.008, -0.035))]
    t = spread_trends(runs, "final", "uniform", "MHo-IHo")["MHe-IHo"]
    assert [r["strategy"] for r in t["rows"]] == ["MHe-IHo", "MHe-IHo.far"]
    assert [r["spread"] for r in t["rows"]] == pytest.approx([1.4, 3.0])
    x = [math.log(1.4)] * 3 + [math.log(3.0)] * 3
    y = [-0.01, -0.012, -0.008, -0.03, -0.025, -0.035]
    ref = sps.linregress(x, y)
    assert t["testable"] and t["df"] == 4
    assert t["slope"] == pytest.approx(ref.slope) and t["p"] == pytest.approx(ref.pvalue)
    assert t["ci"][0] < t["slope"] < t["ci"][1] < 0
    one = spread_trends(runs[:1], "final", "uniform", "MHo-IHo")["MHe-IHo"]
    assert not one["testable"] and one["points"] == 2
