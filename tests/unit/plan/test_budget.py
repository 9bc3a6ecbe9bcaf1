"""FLOP conventions: the paper's count and the hardware count, and which one budgets are matched in."""

from __future__ import annotations

import pytest

from hdee.budget import budget_flops, expert_flops, size_flops_per_step
from hdee.config import load_config
from hdee.core.errors import PlanError
from hdee.model import SizeSpec, flops_per_token, flops_per_token_full, param_counts
from hdee.plan import build_plan
from hdee.registry import STRATEGIES
from hdee.strategies import Assignment, Strategy, register

from tests.helpers.paths import CONFIGS

VOCAB = 2048


@pytest.fixture(scope="module")
def embedded():
    return load_config(CONFIGS / "embedded.toml")


def _with_flops(cfg, convention):
    return cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"flops": convention})})


def test_shipped_configs_choose_their_convention(tiny, embedded, paper):
    assert (tiny.budget.flops, embedded.budget.flops, paper.budget.flops) == ("hardware", "hardware", "paper")


def test_hardware_count_includes_the_head_and_attention(embedded):
    spec = SizeSpec.from_family(embedded.model, "M", VOCAB, embedded.data.seq_len)
    head = VOCAB * embedded.model.hidden
    assert head / param_counts(spec)["non_embedding"] == pytest.approx(0.44, abs=0.005)  # what the paper's count leaves out
    attention = 6 * embedded.model.layers * embedded.data.seq_len * embedded.model.hidden
    per_token = 6 * (param_counts(spec)["non_embedding"] + head) + attention
    assert flops_per_token_full(spec) == per_token
    assert size_flops_per_step(embedded, VOCAB, "M") == per_token * embedded.train.batch_tokens
    assert size_flops_per_step(embedded, VOCAB, "M", "paper") == flops_per_token(spec) * embedded.train.batch_tokens
    assert budget_flops(embedded, VOCAB) == 9 * 50 * per_token * embedded.train.batch_tokens


def test_plan_records_both_counts_and_matches_budgets_in_the_chosen_one(embedded):
    plan = build_plan(embedded.model_copy(update={"strategies": ["MHo-IHo", "MHe-IHe", "dense"]}), VOCAB)
    assert plan.flops_convention == "hardware"
    assert plan.budget_flops == plan.budget_by["hardware"] > plan.budget_by["paper"]
    for job in plan.jobs_of("seed", "train", "dense"):
        assert job.flops == job.flops_by["hardware"]
        assert job.flops_by["paper"] == expert_flops(embedded, VOCAB, job.size, job.steps, "paper")
    for name, ens in plan.ensembles.items():
        assert ens.domain_flops == ens.flops_by["hardware"]["domain"]
        assert ens.domain_flops == pytest.approx(plan.budget_flops, rel=embedded.budget.tolerance), name
        assert ens.flops_by["paper"]["seed"] < ens.flops_by["hardware"]["seed"]
    # MHe-IHe scales its last iteration to the chosen count: other steps than in the paper's count
    hw = sorted(plan.job(e).steps for e in plan.ensembles["MHe-IHe"].experts)
    paper = build_plan(_with_flops(embedded, "paper").model_copy(update={"strategies": ["MHe-IHe"]}), VOCAB)
    assert hw != sorted(paper.job(e).steps for e in paper.ensembles["MHe-IHe"].experts)


def test_trading_size_for_steps_is_on_budget_only_in_the_paper_count(embedded):
    """All-S experts given the steps that the paper's count affords are over a hardware budget:
    the head and attention cost as much in S as in M."""

    @register("test-all-small")
    class AllSmall(Strategy):
        def assign(self, pilot_outputs=None):
            steps = round(50 * size_flops_per_step(self.cfg, VOCAB, "M", "paper") / size_flops_per_step(self.cfg, VOCAB, "S", "paper"))
            return Assignment(self.lineage_experts(lambda lin, i: "S", lambda lin, i: steps))

    try:
        cfg = embedded.model_copy(update={"strategies": ["MHo-IHo", "test-all-small"]})
        on_paper = build_plan(_with_flops(cfg, "paper"), VOCAB)
        ens = on_paper.ensembles["test-all-small"]
        assert abs(ens.domain_flops / on_paper.budget_flops - 1) < cfg.budget.tolerance
        assert ens.flops_by["hardware"]["domain"] / on_paper.budget_by["hardware"] - 1 > 0.05  # what the paper's count hides
        with pytest.raises(PlanError, match=r"'test-all-small' spends .* \(hardware count\), \+[0-9.]+% off"):
            build_plan(_with_flops(cfg, "hardware"), VOCAB)
    finally:
        STRATEGIES.remove("test-all-small")


def test_paper_config_still_reproduces_its_budget(paper):
    plan = build_plan(paper, 128002)
    assert plan.flops_convention == "paper"
    assert plan.ensembles["MHo-IHo"].iteration_flops["3"] == pytest.approx(5.61e17, rel=2e-3)
    # the paper's MHe-IHe: S@300, M@400, L@500 scaled by one factor to the budget
    steps = {plan.job(e).size: plan.job(e).steps for e in plan.ensembles["MHe-IHe"].experts}
    assert steps == {"S": 291, "M": 388, "L": 485}
