"""Strategies: expert assignments per (lineage, iteration) under one budget."""

from __future__ import annotations

import pytest

from hdee.budget import budget_flops, expert_flops
from hdee.core.errors import PlanError
from hdee.registry import STRATEGIES
from hdee.strategies import Assignment, ExpertSpec, Strategy, StrategyContext, get_strategy, register

PAPER_VOCAB = 128002


def assign(cfg, name, vocab=PAPER_VOCAB):
    return get_strategy(name, StrategyContext(cfg=cfg, vocab=vocab)).assign(None).experts


def table(specs):
    return {(e.lineage, e.iteration): (e.size, e.steps) for e in specs}


def test_registry_has_builtin_strategies():
    for name in ("MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense"):
        assert name in STRATEGIES.names()
    with pytest.raises(PlanError, match="unknown strategy 'nope'"):
        get_strategy("nope", StrategyContext(cfg=None, vocab=1))  # type: ignore[arg-type]


def test_baseline_everywhere(paper):
    t = table(assign(paper, "MHo-IHo"))
    assert len(t) == 9
    assert set(t.values()) == {("M", 400)}


def test_hetero_steps_only_last_iteration_in_paper(paper):
    t = table(assign(paper, "MHo-IHe"))
    for lin in ("easy", "moderate", "hard"):
        assert t[(lin, 1)] == ("M", 400) and t[(lin, 2)] == ("M", 400)
    assert t[("easy", 3)] == ("M", 300)
    assert t[("moderate", 3)] == ("M", 400)
    assert t[("hard", 3)] == ("M", 500)


def test_hetero_steps_every_iteration_when_all(paper):
    cfg = paper.model_copy(update={"budget": paper.budget.model_copy(update={"vary_steps_in": "all"})})
    t = table(assign(cfg, "MHo-IHe"))
    assert [t[("easy", i)][1] for i in (1, 2, 3)] == [300, 300, 300]
    assert [t[("hard", i)][1] for i in (1, 2, 3)] == [500, 500, 500]


def test_hetero_size_is_per_lineage(paper):
    t = table(assign(paper, "MHe-IHo"))
    for i in (1, 2, 3):
        assert t[("easy", i)] == ("S", 400)
        assert t[("moderate", i)] == ("M", 400)
        assert t[("hard", i)] == ("L", 400)


def test_hetero_both_is_scaled_to_the_budget(paper):
    specs = assign(paper, "MHe-IHe")
    t = table(specs)
    # unscaled S@300 + M@400 + L@500 overshoots 3 x M@400 by about 3% in the paper family
    unscaled = sum(expert_flops(paper, PAPER_VOCAB, s, n) for s, n in (("S", 300), ("M", 400), ("L", 500)))
    assert unscaled / (3 * expert_flops(paper, PAPER_VOCAB, "M", 400)) == pytest.approx(1.031, abs=0.002)
    assert t[("easy", 1)] == ("S", 400)  # iterations 1-2 are not varied ("last")
    easy, mod, hard = t[("easy", 3)][1], t[("moderate", 3)][1], t[("hard", 3)][1]
    assert easy < 300 and mod < 400 and hard < 500
    # one common factor: the ratios stay those of 300:400:500 up to rounding
    assert easy / 300 == pytest.approx(hard / 500, abs=0.005)
    total = sum(expert_flops(paper, PAPER_VOCAB, e.size, e.steps) for e in specs)
    assert total / budget_flops(paper, PAPER_VOCAB) == pytest.approx(1.0, abs=1e-3)


def test_dense_matches_the_baseline_flops(paper, tiny):
    (d,) = assign(paper, "dense")
    assert d.kind == "dense" and d.size == "M" and d.steps == 9 * 400
    assert d.domains == tuple(paper.train_domains)
    (t,) = assign(tiny, "dense", vocab=512)
    assert t.steps == 4 * 8


def test_unmatchable_hetero_both_is_refused(tiny):
    # an L so large that iterations 1 (not varied) already spend the whole budget
    model = tiny.model.model_copy(update={"intermediate": {"S": 48, "M": 64, "L": 4000}})
    budget = tiny.budget.model_copy(update={"vary_steps_in": "last"})
    cfg = tiny.model_copy(update={"model": model, "budget": budget})
    with pytest.raises(PlanError, match="cannot be matched") as exc:
        assign(cfg, "MHe-IHe", vocab=512)
    assert "\n" not in str(exc.value)


def test_expert_with_no_steps_is_refused():
    with pytest.raises(PlanError, match="0 steps"):
        ExpertSpec("easy", 1, ("a",), "S", 0)


def test_a_new_strategy_registers_by_name(tiny):
    @register("test-half")
    class Half(Strategy):
        def assign(self, pilot_outputs=None):
            return Assignment(self.lineage_experts(lambda lin, i: "M", lambda lin, i: 4))

    try:
        assert "test-half" in STRATEGIES.names()
        assert set(table(assign(tiny, "test-half", 512)).values()) == {("M", 4)}
    finally:
        STRATEGIES.remove("test-half")
