"""evaluate(): results.json schema, parity, cache reuse, prior isolation, errors, `hdee eval`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers.experts import make_expert
from hdee.cli.app import app
from hdee.config import load_config
from hdee.registry import MIXING_METHODS
from hdee.ensemble import mixing, scoring
from hdee.core.errors import EnsembleError
from hdee.evaluation.evaluate import EnsembleSpec, evaluate
from hdee.core.fsutil import atomic_write_json
from hdee.core.layout import RunLayout
from hdee.plan import EnsemblePlan, Plan
from tests.helpers.paths import ROOT

torch.set_num_threads(1)


class Reader:
    """Token ids per (domain, split); `tokens` can be edited to change what a split holds."""

    def __init__(self, domains):
        rng = np.random.default_rng(0)
        self.tokens = {(d, s): rng.integers(0, 256, size=2000) for d in domains for s in ("test", "val")}
        self.reads: list[tuple[str, str]] = []

    def __call__(self, layout, domain, split):
        self.reads.append((domain, split))
        if split == "train" and (domain, split) not in self.tokens:  # routers read train splits only
            self.tokens[(domain, split)] = np.random.default_rng(len(self.tokens)).integers(0, 256, size=2000)
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
    choice = res["method_choice"]
    assert choice["chosen_on"] == "val" and choice["method"] not in ("best-expert", "product")
    assert res["ensemble"] == "final" and "alt" not in res  # no other kind was asked for
    for ens in res["ensembles"].values():  # the chosen method's loss per test window, for the statistics
        assert set(ens["window_nll"]) == set(MIXING_METHODS.builtin_names()) - {"product"}
        assert all(len(ens["window_nll"]["uniform"][d["name"]]) == d["windows"] == 32 for d in res["domains"])
    rows = list(csv.DictReader((layout.results_dir / "results.csv").open()))
    assert len(rows) == 4 * 6 + 3 * len(MIXING_METHODS.builtin_names()) * 6


def test_one_expert_ensemble_equals_expert_for_every_method(first_run):
    _, _, res = first_run
    want = res["experts"]["dense"]["ppl"]
    for method, per in res["ensembles"]["dense"]["ppl"].items():
        if MIXING_METHODS.get(method).routed:  # the prefix model scores the routing prefix
            continue
        for d, v in per.items():
            assert v == pytest.approx(want[d], rel=1e-9), (method, d)


def test_numbers_follow_from_cached_scores(cfg, first_run):
    layout, _, res = first_run
    d = "py_license"
    lp = np.stack([np.load(layout.score_path(e, d, "test")) for e in ("a", "b", "c")])
    val = np.stack([np.load(layout.score_path(e, d, "val")) for e in ("a", "b", "c")])
    assert val.shape == (3, 32, 32)  # the prior's 4 windows, then 28 to choose the method on (1,024 val tokens)
    prior = val[:, : cfg.eval.prior_sequences]
    ens = res["ensembles"]["MHe-IHo"]
    assert ens["ppl"]["uniform"][d] == pytest.approx(mixing.perplexity(mixing.uniform(lp)), rel=1e-9)
    assert ens["ppl"]["cached-prior"][d] == pytest.approx(
        mixing.perplexity(mixing.prefix_posterior(lp, mixing.estimate_prior(prior, cfg.eval.prior_alpha))), rel=1e-9)
    assert ens["val_ppl"]["cached-prior"][d] == pytest.approx(
        mixing.perplexity(mixing.prefix_posterior(val[:, 4:], mixing.estimate_prior(prior, cfg.eval.prior_alpha))), rel=1e-9)
    assert ens["select_windows"][d] == 28
    method = res["method_choice"]["method"]
    per_window = ens["window_nll"][method][d]
    assert math.exp(sum(per_window) / len(per_window)) == pytest.approx(ens["ppl"][method][d], rel=1e-9)
    assert ens["ppl"]["best-expert"][d] == pytest.approx(min(res["experts"][e]["ppl"][d] for e in "abc"), rel=1e-9)
    assert res["experts"]["a"]["ppl"][d] == pytest.approx(mixing.perplexity(lp[0]), rel=1e-9)
    assert len({round(v, 9) for v in (ens["ppl"][m][d] for m in MIXING_METHODS.builtin_names())}) >= 6


def test_method_is_chosen_on_validation_windows_after_the_priors(cfg, first_run):
    """The main method has the lowest mean log-perplexity on the val windows the prior did not see,
    over the ensembles of several experts; the test split plays no part."""
    layout, _, res = first_run
    multi = [n for n, e in res["ensembles"].items() if len(e["experts"]) > 1]
    means = {}
    for m in ("uniform", "prefix-posterior", "prevtoken-posterior", "cached-prior", "cached-prior-prevtoken", "top-k"):
        logs = []
        for name in multi:
            ids = res["ensembles"][name]["experts"]
            for d in cfg.eval_domains:
                val = np.stack([np.load(layout.score_path(e, d, "val")) for e in ids])
                mixed = mixing.mix_cached(m, val[:, 4:], val[:, :4], top_k_experts=cfg.eval.top_k, prior_alpha=cfg.eval.prior_alpha)
                logs.append(math.log(mixing.perplexity(mixed)))
        means[m] = sum(logs) / len(logs)
    choice = res["method_choice"]
    assert choice["val_mean_log_ppl"] == pytest.approx(means, rel=1e-9)
    assert choice == {"method": min(means, key=means.get), "chosen_on": "val", "val_mean_log_ppl": choice["val_mean_log_ppl"]}


def test_choice_ignores_the_test_split_and_the_priors_windows(cfg, experts, tmp_path):
    reader = Reader(cfg.eval_domains)
    layout = RunLayout(tmp_path)
    spec = {"MHe-IHo": ENSEMBLES["MHe-IHo"]}
    base = evaluate(cfg, layout, experts, spec, reader)
    for d in cfg.eval_domains:  # another test split everywhere: other test numbers, the same choice
        reader.tokens[(d, "test")] = np.random.default_rng(7).integers(0, 256, size=2000)
    poisoned = evaluate(cfg, layout, experts, spec, reader)
    assert poisoned["ensembles"]["MHe-IHo"]["ppl"] != base["ensembles"]["MHe-IHo"]["ppl"]
    assert poisoned["method_choice"] == base["method_choice"]
    d = "py_code"  # tokens after the prior's 4 windows of 33 (which share one boundary token) move the choice's numbers only
    val = reader.tokens[(d, "val")].copy()
    val[4 * 32 + 1 :] = np.random.default_rng(8).integers(0, 256, size=len(val) - 4 * 32 - 1)
    reader.tokens[(d, "val")] = val
    moved = evaluate(cfg, layout, experts, spec, reader)
    assert moved["ensembles"]["MHe-IHo"]["priors"] == base["ensembles"]["MHe-IHo"]["priors"]
    assert moved["ensembles"]["MHe-IHo"]["val_ppl"]["uniform"][d] != base["ensembles"]["MHe-IHo"]["val_ppl"]["uniform"][d]


def test_choose_method_uses_validation_never_test_numbers():
    from hdee.evaluation.method_choice import choose_method

    # on test, cached-prior would win; on the selection windows uniform does: uniform is chosen
    val = {"e": {"uniform": {"x": 10.0, "y": 20.0}, "cached-prior": {"x": 11.0, "y": 21.0}, "best-expert": {"x": 1.0}}}
    choice = choose_method(val, ["uniform", "cached-prior", "best-expert", "product"])
    assert choice["method"] == "uniform" and choice["chosen_on"] == "val"
    assert set(choice["val_mean_log_ppl"]) == {"uniform", "cached-prior"}  # never an oracle or a subset method
    fixed = choose_method(val, ["uniform", "cached-prior"], fixed="cached-prior")
    assert fixed["method"] == "cached-prior" and fixed["chosen_on"] == "config"
    with pytest.raises(EnsembleError, match="no validation windows after the prior's .* eval.method"):
        choose_method({"e": {"uniform": {}}}, ["uniform"])


def test_fixed_method_is_recorded_as_chosen_in_the_config(cfg, experts, tmp_path):
    fixed = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"method": "prevtoken-posterior"})})
    res = evaluate(fixed, RunLayout(tmp_path), experts, {"MHe-IHo": ENSEMBLES["MHe-IHo"]}, Reader(cfg.eval_domains))
    assert res["method_choice"]["method"] == "prevtoken-posterior" and res["method_choice"]["chosen_on"] == "config"


@pytest.mark.parametrize("method", ["best-expert", "product"])
def test_config_refuses_an_oracle_or_subset_method_as_the_main_one(tmp_path, method):
    from hdee.core.errors import ConfigError

    text = (ROOT / "configs/tiny.toml").read_text().replace("[eval]\n", f'[eval]\nmethod = "{method}"\n')
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=f"c.toml: eval: eval.method '{method}' cannot be the main method"):
        load_config(tmp_path / "c.toml")


def test_both_ensemble_kinds_from_the_same_experts(cfg, experts, first_run):
    layout, reader, _ = first_run
    final = {"MHo-IHo": EnsembleSpec(["b"]), "dense": EnsembleSpec(["dense"])}
    forest = {"MHo-IHo": EnsembleSpec(["a", "b"]), "dense": EnsembleSpec(["dense"])}
    res = evaluate(cfg, layout, experts, final, reader, alt=forest)
    assert res["ensemble"] == "final" and res["alt"]["ensemble"] == "all"
    assert res["alt"]["ensembles"]["MHo-IHo"]["experts"] == ["a", "b"]
    assert res["alt"]["method_choice"]["chosen_on"] == "val"
    forest_ppl = res["alt"]["ensembles"]["MHo-IHo"]["ppl"]
    assert "product" not in forest_ppl  # the forest is mixed from cached scores only: no model runs
    assert {m: res["ensembles"]["dense"]["ppl"][m] for m in forest_ppl} == res["alt"]["ensembles"]["dense"]["ppl"]
    rows = list(csv.DictReader((layout.results_dir / "results.csv").open()))
    assert {r["kind"] for r in rows} == {"expert", "ensemble:final", "ensemble:all"}


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
        "seed_flops": 0.0, "domain_flops": 0.0, "flops_convention": "paper", "flops_by": {}, "sizes_needed": [], "repeat": 0,
        "seeds": [], "decision": decision, "measured_val_loss": {},
    }
    assert "decision" not in out["ensembles"]["dense"]["meta"]
    assert math.isfinite(out["ensembles"]["pair"]["ppl"]["uniform"]["py_code"])
    assert out["provenance"]["command"].split()[0] and out["provenance"]["packages"]["torch"]
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "config.json: not found" in missing.stderr
