"""budget.charge = "total": seed models are paid for, so a strategy that needs three pays for three."""

from __future__ import annotations

import pytest

from hdee.budget import seed_flops
from hdee.config import ExperimentConfig
from hdee.plan import build_plan

VOCAB = 512
STRATS = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "placebo", "one-iteration", "dense"]


def _with(cfg, **budget):
    raw = cfg.model_dump(mode="json")
    raw["budget"].update(budget)
    raw["strategies"] = STRATS
    return ExperimentConfig.model_validate(raw)


def test_total_charge_matches_seed_plus_domain_phase(tiny):
    domain, total = build_plan(_with(tiny), VOCAB), build_plan(_with(tiny, charge="total"), VOCAB)
    base_seed = seed_flops(tiny, VOCAB, ["M"])
    two = seed_flops(tiny, VOCAB, ["S", "L"])  # tiny's tiers: easy -> S, hard -> L
    assert two > 1.9 * base_seed
    limit = domain.ensembles["MHo-IHo"].domain_flops + base_seed
    for name in STRATS:
        e = total.ensembles[name]
        assert e.seed_flops + e.domain_flops == pytest.approx(limit, rel=tiny.budget.tolerance), name
    # the size-heterogeneous strategies pay for their extra seeds with fewer domain-phase steps
    for name in ("MHe-IHo", "MHe-IHe", "placebo"):
        assert total.ensembles[name].domain_flops < domain.ensembles[name].domain_flops
        assert total.ensembles[name].seed_flops == pytest.approx(two)
    for name in ("MHo-IHo", "MHo-IHe", "one-iteration", "dense"):  # one seed, like the baseline: nothing changes
        assert total.ensembles[name].domain_flops == domain.ensembles[name].domain_flops
    # the domain-only default dumps as before (job ids and run-dir checks unchanged)
    assert "charge" not in tiny.model_dump(mode="json")["budget"]


def test_total_charge_refuses_auto(tiny):
    raw = tiny.model_dump(mode="json")
    raw["budget"]["charge"] = "total"
    raw["strategies"] = ["MHo-IHo", "auto"]
    with pytest.raises(ValueError, match="budget.charge = 'total' is not supported by the auto strategy"):
        ExperimentConfig.model_validate(raw)


def test_the_plan_and_the_report_say_what_the_budgets_match(tiny):
    from tests.unit.report.test_report import fake_results

    from hdee.report.compare import comparison
    from hdee.report.markdown import render_markdown

    assert build_plan(_with(tiny), VOCAB).charge == "domain"
    assert build_plan(_with(tiny, charge="total"), VOCAB).charge == "total"
    res = fake_results(1)
    assert "at equal domain-phase compute" in render_markdown(comparison([res]), "x")
    for ens in res["ensembles"].values():
        ens["meta"]["charge"] = "total"
    assert "at equal total compute" in render_markdown(comparison([res]), "x")
