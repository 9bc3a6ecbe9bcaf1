"""Expert opt-out: ensembles re-mixed without some experts, from cached scores only; the report's effect tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hdee.run import load_run
from hdee.cli.app import app
from hdee.report.compare import NOT_REMOVED, comparison
from hdee.ensemble import scoring
from hdee.core.errors import ConfigError
from hdee.evaluation.evaluate import evaluate
from hdee.evaluation.optout import opt_out
from hdee.report.write import render_markdown
from tests.helpers.cli_helpers import cli_error
from tests.helpers.run_fixture import make_run

torch.set_num_threads(1)
EASY, HARD_M, HARD_L = "train-easy-i2-M-8-aaaa", "train-hard-i2-M-8-bbbb", "train-hard-i2-L-8-cccc"


class Reader:
    def __init__(self, domains):
        rng = np.random.default_rng(0)
        self.tokens = {(d, s): rng.integers(0, 300, size=1500) for d in domains for s in ("test", "val", "train")}  # train: routers

    def __call__(self, layout, domain, split):
        return self.tokens[(domain, split)]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    run = load_run(make_run(tmp_path_factory.mktemp("optout") / "run").root)
    reader = Reader(run.cfg.eval_domains)
    full = evaluate(run.cfg, run.layout, run.experts, run.ensembles, reader)
    return run, reader, full


@pytest.fixture
def no_forward(scored, monkeypatch):
    _, reader, _ = scored
    monkeypatch.setattr(scoring, "read_tokens", reader)

    def forbidden(*a, **k):
        raise AssertionError("opt-out ran a model")

    monkeypatch.setattr(scoring, "score_model", forbidden)
    monkeypatch.setattr("hdee.evaluation.evaluate.load_model", forbidden)


def test_removing_a_domain_removes_the_experts_trained_on_it(scored, no_forward):
    run, _, full = scored
    res = opt_out(run, ["c_headers"])
    assert res["without"] == {"c_headers": [HARD_L, HARD_M]}
    assert res["emptied"] == [] and res["not_removed"] == NOT_REMOVED
    assert "product" not in res["methods"]
    for name in ("MHo-IHo", "MHe-IHo"):  # only the easy expert stays
        ens = res["ensembles"][name]
        assert ens["experts"] == [EASY] and ens["meta"]["removed"] == [e for e in run.ensembles[name].experts if e != EASY]
        for m in res["methods"]:
            for d, v in ens["ppl"][m].items():
                assert v == pytest.approx(full["experts"][EASY]["ppl"][d], rel=1e-9)
    assert HARD_M not in res["experts"] and run.layout.opt_out_path("c_headers").is_file()


def test_leave_one_out_in_results_matches_opting_out_that_expert(scored, no_forward):
    run, _, full = scored
    method = full["method_choice"]["method"]
    loo = full["ensembles"]["MHe-IHo"]["without_each"]
    assert loo["method"] == method and set(loo["ppl"]) == {EASY, HARD_L}
    res = opt_out(run, [HARD_L])
    assert set(res["ensembles"]) == {"MHo-IHo", "MHe-IHo"}
    assert res["ensembles"]["MHo-IHo"]["ppl"][method] == pytest.approx(full["ensembles"]["MHo-IHo"]["ppl"][method])
    for d, v in loo["ppl"][HARD_L].items():
        assert res["ensembles"]["MHe-IHo"]["ppl"][method][d] == pytest.approx(v, rel=1e-9)
    cmp = comparison([full])
    effect = cmp["opt_out"]["MHe-IHo"][HARD_L]["c_headers"]
    assert effect == pytest.approx(loo["ppl"][HARD_L]["c_headers"] / full["ensembles"]["MHe-IHo"]["ppl"][method]["c_headers"] - 1)
    md = render_markdown(cmp, "tiny")
    section = md.split("## Opting out: one expert removed")[1]
    assert NOT_REMOVED in section and f"without `{HARD_L}`" in section
    assert "| c_headers | " in section and f"{effect:+.1%}" in section


def test_bad_targets_are_one_line_errors(scored, no_forward):
    run, _, _ = scored
    with pytest.raises(ConfigError, match="'nope': not an expert id of plan.json or a training domain"):
        opt_out(run, ["nope"])
    with pytest.raises(ConfigError, match="removes every expert of every ensemble"):
        opt_out(run, ["pydoc_topics", "c_headers"])


def test_cli_without_prints_changes_and_what_stays(scored, no_forward):
    run, _, _ = scored
    res = CliRunner().invoke(app, ["eval", str(run.layout.root), "--without", "pydoc_topics"])
    assert res.exit_code == 0, res.output
    assert f"--without pydoc_topics: removed {EASY}" in res.output
    assert "seed models were trained on every training domain" in res.output and "%)" in res.output
    both = CliRunner().invoke(app, ["eval", str(run.layout.root), "--without", "c_headers", "--data", "x.txt"])
    assert "--without" in cli_error(both)
