"""The control arms: the reversed-tier placebo and the one-iteration arm, at the baseline's budget."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hdee.cli import app
from hdee.plan import build_plan

from tests.helpers.paths import ROOT
VOCAB = 512
ARMS = '["MHo-IHo", "MHe-IHe", "placebo", "one-iteration"]'


def arms_config(tmp_path: Path) -> Path:
    text = (ROOT / "configs/tiny.toml").read_text()
    old = 'strategies = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense"]'
    assert old in text
    path = tmp_path / "arms.toml"
    path.write_text(text.replace(old, f"strategies = {ARMS}"))
    return path


def _lineage_shape(plan, strategy):
    return {(j.lineage, j.iteration): (j.size, j.steps, j.parent)
            for j in plan.jobs if j.kind == "train" and strategy in j.used_by}


def test_placebo_mirrors_the_tiers_at_the_same_budget(tiny):
    cfg = tiny.model_copy(update={"strategies": ["MHo-IHo", "MHe-IHe", "placebo"]})
    plan = build_plan(cfg, VOCAB)
    hetero, placebo = _lineage_shape(plan, "MHe-IHe"), _lineage_shape(plan, "placebo")
    # tiny: easy -> S with 6 steps, hard -> L with 10; the placebo gives hard the S and easy the L
    assert {k: v[0] for k, v in hetero.items()} == {("easy", 1): "S", ("easy", 2): "S", ("hard", 1): "L", ("hard", 2): "L"}
    assert {k: v[0] for k, v in placebo.items()} == {("easy", 1): "L", ("easy", 2): "L", ("hard", 1): "S", ("hard", 2): "S"}
    assert placebo[("hard", 2)][1] < placebo[("easy", 2)][1]  # the hard lineage also gets the fewest steps
    base = plan.ensembles["MHo-IHo"].domain_flops
    assert abs(plan.ensembles["placebo"].domain_flops / base - 1) <= cfg.budget.tolerance


def test_one_iteration_branches_every_expert_from_its_seed(tiny):
    cfg = tiny.model_copy(update={"strategies": ["MHo-IHo", "one-iteration"]})
    plan = build_plan(cfg, VOCAB)
    seed = next(j.id for j in plan.jobs if j.kind == "seed")
    shape = _lineage_shape(plan, "one-iteration")
    assert len(shape) == 4 and all(parent == seed for _, _, parent in shape.values())
    ens, base = plan.ensembles["one-iteration"], plan.ensembles["MHo-IHo"]
    assert len(ens.experts) == 4 and sorted(ens.experts) == sorted(ens.members["all"])  # nothing branches from any
    assert len(base.experts) == 2  # the lineages' last experts
    assert ens.domain_flops == base.domain_flops
    # iteration 1 is the baseline's own expert (one job, paired), iteration 2 is not
    assert set(ens.members["all"]) & set(base.members["all"]) == {j for j in base.members["all"] if plan.job(j).iteration == 1}


def test_both_arms_appear_in_hdee_plan(tmp_path):
    res = CliRunner().invoke(app, ["plan", str(arms_config(tmp_path)), "--run-dir", str(tmp_path / "run"),
                                   "--vocab", str(VOCAB)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for arm in ("placebo", "one-iteration"):
        assert arm in res.output
