"""evaluate(): results.json schema, parity, cache reuse, prior isolation, errors, `hdee eval`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from experts import make_expert
from hdee.cli.app import app
from hdee.config import load_config
from hdee.registry import MIXING_METHODS
from hdee.ensemble import mixing, scoring
from hdee.errors import EnsembleError
from hdee.evaluate import EnsembleSpec, evaluate
from hdee.fsutil import atomic_write_json
from hdee.layout import RunLayout
from hdee.plan import EnsemblePlan, Plan

torch.set_num_threads(1)


class Reader:
    """Token ids per (domain, split); `tokens` can be edited to change what a split holds."""

    def __init__(self, domains):
        rng = np.random.default_rng(0)
        self.tokens = {(d, s): rng.integers(0, 256, size=2000) for d in domains for s in ("test", "val")}
        self.reads: list[tuple[str, str]] = []

    def __call__(self, layout, domain, split):
        self.reads.append((domain, split))
        return self.tokens[(domain, split)]


@pytest.fixture(scope="module")
def cfg():
    return load_config("configs/tiny.toml")


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    return {
        "a": make_expert(root / "a", 1, intermediate=48, scale=20, size="S"),
        "b": make_expert(root / "b", 2, intermediate=64, scale=20),
        "c": make_expert(root / "c", 3, intermediate=80, scale=20, size="L"),
        "dense": make_expert(root / "dense", 4, scale=20),
    }


ENSEMBLES = {
    "MHo-IHo": EnsembleSpec(["a", "b"], {"strategy": "MHo-IHo"}),
    "MHe-IHo": EnsembleSpec(["a", "b", "c"]),
    "dense": EnsembleSpec(["dense"]),
}


@pytest.fixture(scope="module")
def first_run(cfg, experts, tmp_path_factory):
    layout = RunLayout(tmp_path_factory.mktemp("run"))
    reader = Reader(cfg.eval_domains)
    return layout, reader, evaluate(cfg, layout, experts, ENSEMBLES, reader)


def test_results_schema_and_counts(cfg, first_run):
    layout, _, res = first_run
    on_disk = json.loads(layout.results_json.read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert res["config"] == "tiny" and res["methods"] == MIXING_METHODS.builtin_names()
    assert [d["name"] for d in res["domains"]] == cfg.eval_domains
    assert all(d["tokens"] == 1024 for d in res["domains"])  # data.max_eval_tokens = 1024 = 32 windows x 32
    assert {d["name"]: (d["role"], d["tier"]) for d in res["domains"]}["py_tests"] == ("heldout", None)
    assert {d["name"]: d["tier"] for d in res["domains"]}["py_code"] == "easy"
    assert res["experts"]["a"]["meta"]["size"] == "S"
    for ens in res["ensembles"].values():
        assert set(ens["ppl"]) == set(MIXING_METHODS.builtin_names())
        assert all(set(per) == set(cfg.eval_domains) for per in ens["ppl"].values())
    assert res["ensembles"]["MHo-IHo"]["meta"] == {"strategy": "MHo-IHo"}
    assert res["ensembles"]["MHe-IHo"]["product_windows"] == cfg.eval.product_windows
    assert res["default_method"] in MIXING_METHODS.builtin_names() and res["default_method"] not in ("best-expert", "product")
    rows = list(csv.DictReader((layout.results_dir / "results.csv").open()))
    assert len(rows) == 4 * 6 + 3 * len(MIXING_METHODS.builtin_names()) * 6


def test_one_expert_ensemble_equals_expert_for_every_method(first_run):
    _, _, res = first_run
    want = res["experts"]["dense"]["ppl"]
    for method, per in res["ensembles"]["dense"]["ppl"].items():
        for d, v in per.items():
            assert v == pytest.approx(want[d], rel=1e-9), (method, d)


def test_numbers_follow_from_cached_scores(cfg, first_run):
    layout, _, res = first_run
    d = "py_license"
    lp = np.stack([np.load(layout.score_path(e, d, "test")) for e in ("a", "b", "c")])
    val = np.stack([np.load(layout.score_path(e, d, "val")) for e in ("a", "b", "c")])
    assert val.shape == (3, cfg.eval.prior_sequences, 32)
    ens = res["ensembles"]["MHe-IHo"]
    assert ens["ppl"]["uniform"][d] == pytest.approx(mixing.perplexity(mixing.uniform(lp)), rel=1e-9)
    assert ens["ppl"]["cached-prior"][d] == pytest.approx(
        mixing.perplexity(mixing.prefix_posterior(lp, mixing.estimate_prior(val, cfg.eval.prior_alpha))), rel=1e-9)
    assert ens["ppl"]["best-expert"][d] == pytest.approx(min(res["experts"][e]["ppl"][d] for e in "abc"), rel=1e-9)
    assert res["experts"]["a"]["ppl"][d] == pytest.approx(mixing.perplexity(lp[0]), rel=1e-9)
    assert len({round(v, 9) for v in (ens["ppl"][m][d] for m in MIXING_METHODS.builtin_names())}) >= 6


def test_rerun_reuses_cache_and_gives_same_numbers(cfg, experts, first_run, monkeypatch):
    layout, reader, res = first_run
    import hdee.ensemble.scoring as sc

    def no_scoring(*a, **k):
        raise AssertionError("rescored although cached")

    monkeypatch.setattr(sc, "score_model", no_scoring)
    only_cached = {k: v for k, v in ENSEMBLES.items() if k == "dense"}
    again = evaluate(cfg, layout, experts, only_cached, reader)
    assert again["experts"] == json.loads(json.dumps(res["experts"]))
    assert again["ensembles"]["dense"] == json.loads(json.dumps(res["ensembles"]["dense"]))


def test_cached_prior_never_reads_the_test_split(cfg, experts, tmp_path):
    reader = Reader(cfg.eval_domains)
    layout = RunLayout(tmp_path)
    spec = {"MHe-IHo": ENSEMBLES["MHe-IHo"]}
    base = evaluate(cfg, layout, experts, spec, reader)
    d = "py_code"
    reader.tokens[(d, "test")] = np.random.default_rng(99).integers(0, 256, size=2000)  # poison the test split
    poisoned = evaluate(cfg, layout, experts, spec, reader)
    assert poisoned["experts"]["a"]["ppl"][d] != base["experts"]["a"]["ppl"][d]
    assert poisoned["ensembles"]["MHe-IHo"]["priors"] == base["ensembles"]["MHe-IHo"]["priors"]
    reader.tokens[(d, "val")] = np.random.default_rng(98).integers(0, 256, size=2000)
    moved = evaluate(cfg, layout, experts, spec, reader)
    assert moved["ensembles"]["MHe-IHo"]["priors"][d] != base["ensembles"]["MHe-IHo"]["priors"][d]
    others = [x for x in cfg.eval_domains if x != d]
    assert all(moved["ensembles"]["MHe-IHo"]["priors"][x] == base["ensembles"]["MHe-IHo"]["priors"][x] for x in others)


def test_bad_inputs_leave_earlier_results_intact(cfg, experts, first_run):
    layout, reader, _ = first_run
    before = layout.results_json.read_bytes()
    with pytest.raises(EnsembleError, match="unknown expert 'zz'"):
        evaluate(cfg, layout, experts, {"x": EnsembleSpec(["a", "zz"])}, reader)
    short = Reader(cfg.eval_domains)
    short.tokens[("c_headers", "test")] = np.arange(10)
    with pytest.raises(EnsembleError, match="c_headers: test split is shorter than one window of 33 tokens"):
        evaluate(cfg, layout, experts, ENSEMBLES, short)
    assert layout.results_json.read_bytes() == before


def test_cli_eval_reads_plan(cfg, experts, tmp_path, monkeypatch):
    layout = RunLayout(tmp_path / "run")
    atomic_write_json(layout.config_snapshot, cfg.model_dump(mode="json"))
    decision = {"objective": "mean", "experts": []}  # what a strategy that measured first records
    Plan(
        config_name=cfg.name, vocab=256, budget_flops=1.0, jobs=[],
        experts={k: str(v) for k, v in experts.items() if k != "c"},
        ensembles={"pair": EnsemblePlan(experts=["a", "b"], decision=decision), "dense": EnsemblePlan(experts=["dense"])},
    ).write(layout.plan_json)
    monkeypatch.setattr(scoring, "read_tokens", Reader(cfg.eval_domains))
    res = CliRunner().invoke(app, ["eval", str(layout.root)])
    assert res.exit_code == 0, res.output
    out = json.loads(layout.results_json.read_text())
    assert set(out["ensembles"]) == {"pair", "dense"}
    # the same metadata the pipeline records, the strategy's decision included (the report shows it)
    assert out["ensembles"]["pair"]["meta"] == {
        "seed_flops": 0.0, "domain_flops": 0.0, "sizes_needed": [], "repeat": 0, "decision": decision, "measured_val_loss": {},
    }
    assert "decision" not in out["ensembles"]["dense"]["meta"]
    assert math.isfinite(out["ensembles"]["pair"]["ppl"]["uniform"]["py_code"])
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nothing")])
    assert isinstance(missing.exception, EnsembleError) and "config.json: not found" in str(missing.exception)
