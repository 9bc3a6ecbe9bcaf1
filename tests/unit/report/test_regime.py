"""Regime gates on real tiny runs, the pre-registration, the verdict's statistics and the power calculation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.weightstats import ttost_paired

from hdee.report.compare import comparison, load_repeats
from hdee.ensemble.documents import document_sums, target_documents
from hdee.report.equivalence import (
    document_bootstrap,
    needed_repeats,
    t_interval,
    tost,
    tost_power,
)
from hdee.core.errors import ConfigError
from hdee.core.fsutil import read_json
from hdee.report.gates import gate_seed_sizes, regime_gates
from hdee.report.prereg import DEFAULT, load_prereg
from hdee.report.regime_md import CANNOT
from hdee.report.write import write_report
from hdee.report.verdict import INCONCLUSIVE, REFUTES, SUPPORTS, rule

# ------------------------------------------------------------------------ gates on real runs


def test_gates_on_the_tiny_run(tiny_run, tmp_path):
    res = read_json(tiny_run.layout.results_json)
    method = res["method_choice"]["method"]
    g = regime_gates([res], [res], method)
    # the domain phase helps: every ensemble beats its own seeds, every expert its parent
    assert g["a"]["passed"] and set(g["a"]["rows"]) == {"MHo-IHo", "MHe-IHo"}
    experts = [e for e in res["experts"].values() if e["meta"]["kind"] == "train"]
    assert g["c"]["passed"] and g["c"]["experts"] == len(experts) == 8
    for name, row in g["a"]["rows"].items():  # the numbers are the results' own
        trained = [d["name"] for d in res["domains"] if d["role"] == "train"]
        want = sum(math.log(res["ensembles"][name]["val_ppl"][method][d]) for d in trained) / len(trained)
        assert row["ensemble"] == pytest.approx(want)
    # tiny's seeds train on the experts' own domains and there is one seed draw: (b) cannot pass
    assert not g["b"]["measurable"] and "disjoint" in g["b"]["why"] and not g["passed"]
    layout = tiny_run.copy(tmp_path / "run")
    write_report(layout)
    md = (layout.root / "report.md").read_text()
    assert md.splitlines()[2].startswith(f"**{CANNOT}** the seed models are not trained on a seed corpus disjoint")
    assert "| (c) every expert beats its parent on its own domain | pass | 8 of 8 |" in md
    assert "none (gates failed)" in md and "supports HDEE |" not in md


@pytest.mark.slow
def test_gates_fail_when_the_domain_phase_diverges(tiny_run, tmp_path):
    """The same tiny run with a domain-phase learning rate far too high: experts end worse than their seeds."""
    import torch
    from tests.helpers.tiny_run import InlineExecutor

    import hdee.pipeline.experiment as pipeline

    cfg = tiny_run.cfg
    bad = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"schedule": cfg.budget.schedule.model_copy(
        update={"lr": 3.0, "min_lr": 3.0})})})
    layout = tiny_run.copy(tmp_path / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pipeline, "make_executor", lambda cfg, run_dir, **kw: InlineExecutor(run_dir))
            pipeline.run_experiment(bad, layout, view=False, force=True)
    finally:
        torch.set_num_threads(threads)
    res = read_json(layout.results_json)
    g = regime_gates([res], [res], res["method_choice"]["method"])
    assert not g["a"]["passed"] and not g["c"]["passed"]
    assert g["c"]["beaten"] < g["c"]["experts"]
    md = (layout.root / "report.md").read_text()
    assert "do not beat their own seed models on the trained domains" in md.splitlines()[2]
    assert "do not beat their parent on their own domain" in md.splitlines()[2]


def _draw(gap: float, disjoint: bool = True) -> dict:
    seeds = {f"seed-{s}": {"meta": {"kind": "seed", "size_name": s, "params": {"total": n}, "final_val_loss": loss}, "ppl": {}}
             for s, n, loss in (("S", 1, 4.0 + gap), ("M", 2, 4.0 + gap / 2), ("L", 3, 4.0))}
    return {"experts": seeds, "seed_corpus": {"domains": ["web"], "disjoint": disjoint}}


def test_seed_size_gate_needs_three_sds_over_draws_on_a_disjoint_corpus():
    passing = gate_seed_sizes([_draw(g) for g in (0.10, 0.11, 0.09)])
    assert passing["measurable"] and passing["passed"] and passing["sizes"] == ["S", "L"]
    assert passing["mean"] == pytest.approx(0.10) and passing["sd"] == pytest.approx(0.01)
    noisy = gate_seed_sizes([_draw(g) for g in (0.10, -0.05, 0.02)])
    assert noisy["measurable"] and not noisy["passed"]
    one = gate_seed_sizes([_draw(0.1)])
    assert not one["measurable"] and not one["passed"] and "1 seed draw" in one["why"]
    shared = gate_seed_sizes([_draw(g, disjoint=False) for g in (0.10, 0.11)])
    assert not shared["measurable"] and "disjoint" in shared["why"]


def _spread_draw(far_gap: float, close_gap: float) -> dict:
    """Seeds XS/S/M/L/XL; MHe-IHo's experts branch from XS, M and XL, MHe-IHo.close's from S, M and L."""
    losses = {"XS": 4.0 + far_gap, "S": 4.0 + close_gap, "M": 4.0, "L": 4.0, "XL": 4.0}
    experts = {f"seed-{s}": {"meta": {"kind": "seed", "size_name": s, "params": {"total": n}, "final_val_loss": losses[s]}}
               for n, s in enumerate(losses)}
    ensembles = {}
    for name, sizes in (("MHe-IHo", ("XS", "M", "XL")), ("MHe-IHo.close", ("S", "M", "L"))):
        for s in sizes:
            experts[f"{name}-{s}"] = {"meta": {"kind": "train", "parent": {"path": f"experts/seed-{s}"}}}
        ensembles[name] = {"experts": [f"{name}-{s}" for s in sizes]}
    return {"experts": experts, "ensembles": ensembles, "seed_corpus": {"domains": ["web"], "disjoint": True}}


def test_the_seed_size_gate_reads_the_sizes_of_mhe_iho_and_shows_other_spreads_beside_it():
    g = gate_seed_sizes([_spread_draw(f, c) for f, c in ((0.10, 0.01), (0.11, -0.01), (0.09, 0.0))])
    assert g["strategy"] == "MHe-IHo" and g["sizes"] == ["XS", "XL"] and g["passed"]
    assert g["mean"] == pytest.approx(0.10)
    close = g["spreads"]["MHe-IHo.close"]
    assert close["sizes"] == ["S", "L"] and close["measurable"] and not close["passed"]
    assert close["mean"] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------ statistics


def test_tost_matches_statsmodels():
    rng = np.random.default_rng(3)
    for n, shift, margin in ((5, 0.001, 0.01), (8, 0.004, 0.01), (4, -0.02, 0.01), (12, 0.0, 0.002)):
        a = rng.normal(4.0, 0.01, n)
        b = a + shift + rng.normal(0, 0.004, n)
        p_sm, _, _ = ttost_paired(b, a, -margin, margin)
        assert tost(list(b - a), margin) == pytest.approx(float(p_sm), rel=1e-9)


def test_t_interval_and_rule():
    mean, lo, hi = t_interval([-0.02, -0.03, -0.025, -0.015])
    assert lo < mean < hi < 0
    assert rule((mean, lo, hi), None, 0.05) == SUPPORTS
    assert rule((0.01, 0.002, 0.02), None, 0.05) == REFUTES
    assert rule((0.0, -0.004, 0.004), 0.01, 0.05) == REFUTES  # equivalent within the margin
    assert rule((0.0, -0.02, 0.02), 0.3, 0.05) == INCONCLUSIVE
    assert rule(None, None, 0.05) == INCONCLUSIVE and t_interval([0.1]) is None


def test_power_gives_the_repeats_a_margin_needs():
    assert needed_repeats(0.0, 0.01) == 2
    n = needed_repeats(0.02, 0.01)
    assert tost_power(n, 0.02, 0.01) >= 0.8 > tost_power(n - 1, 0.02, 0.01)
    assert needed_repeats(0.04, 0.01) > n  # more noise, more repeats
    # the normal approximation agrees with a simulation of the TOST at that n
    rng = np.random.default_rng(0)
    sims = rng.normal(0, 0.02, size=(800, n))
    hits = np.mean([tost(list(row), 0.01) < 0.05 for row in sims])
    assert hits == pytest.approx(tost_power(n, 0.02, 0.01), abs=0.07)
    with pytest.raises(ValueError):
        needed_repeats(0.02, 0.0)


def test_documents_follow_eos_across_windows():
    eos = 0
    stream = np.array([5, 6, 0, 7, 8, 9, 0, 3, 4])  # documents: [5 6 0] [7 8 9 0] [3 4]
    windows = np.stack([stream[0:4], stream[3:7]])  # consecutive windows share one token
    docs = target_documents(windows, eos)
    # targets: 6 0 7 | 8 9 0 -> documents 0 0 1 | 1 1 1
    assert docs.tolist() == [[0, 0, 1], [1, 1, 1]]
    lp = -np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    nll, tokens = document_sums(lp, docs)
    assert nll == [3.0, 18.0] and tokens == [2, 4]


def test_document_bootstrap_resamples_documents_per_domain():
    a = np.array([10.0, 20.0, 30.0, 40.0])
    b = a + np.array([1.0, -1.0, 2.0, 0.0])
    n = np.array([10, 20, 30, 40])
    mean, lo, hi = document_bootstrap([(b, a, n), (a, a, n)], resamples=500)
    assert mean == pytest.approx((2.0 / 100 + 0.0) / 2)
    assert lo < mean < hi
    assert document_bootstrap([(a, a, n)], resamples=100) == (0.0, 0.0, 0.0)


# ------------------------------------------------------------------------ pre-registration


def test_the_shipped_preregistration_validates_and_marks_its_provisional_values():
    pre, sha = load_prereg(DEFAULT)
    assert len(sha) == 64 and pre.endpoint.baseline == "MHo-IHo" and pre.analysis.bootstrap == "documents"
    assert set(pre.design.provisional) <= {"design.repeats", "design.seed_draws"}  # the margin is fixed
    assert pre.analysis.margin == 0.02


def test_a_bad_preregistration_is_one_clear_line(tmp_path):
    text = DEFAULT.read_text()
    for broken, want in ((text.replace("margin = 0.02", "margin = -1"), "analysis.margin"),
                         (text.replace("[rule]", "[rule]\nextra = 1"), "rule.extra: unknown key"),
                         (text + "\n[[", "cannot parse")):
        path = tmp_path / "pre.toml"
        path.write_text(broken)
        with pytest.raises(ConfigError) as exc:
            load_prereg(path)
        assert want in str(exc.value) and "\n" not in str(exc.value)
    assert load_prereg(tmp_path / "absent.toml") is None


def test_results_record_the_preregistration_and_the_report_prints_a_verdict(tiny_run, tmp_path):
    res = read_json(tiny_run.layout.results_json)
    rec = res["provenance"]["preregistration"]
    assert rec["sha256"] == load_prereg(DEFAULT)[1]
    layout = tiny_run.copy(tmp_path / "run")
    cmp = write_report(layout)
    v = cmp["regime"]["verdict"]
    assert not v["changed"] and v["short"]  # one repeat of the five registered
    row = v["strategies"]["MHe-IHo"]
    assert row["verdict"] == INCONCLUSIVE and row["ci"] is None
    mean, lo, hi = row["doc_ci"]
    assert lo <= mean <= hi and mean == pytest.approx(row["diffs"][0], abs=1e-6)  # same documents, same endpoint
    assert comparison(load_repeats(layout))["method"] == v["method"]


def test_hdee_power_reads_the_validation_noise_of_the_repeats(tiny_run, tmp_path):
    import shutil

    from tests.helpers.cli_helpers import cli_error
    from typer.testing import CliRunner

    from hdee.cli import app
    from hdee.report.verdict import endpoint

    layout = tiny_run.copy(tmp_path / "run")
    args = ["power", str(layout.root), "--margin", "0.01"]
    assert "at least 2" in cli_error(CliRunner().invoke(app, args))
    # a second repeat whose validation scores differ: the copy of repeat 0 with one domain shifted
    res = read_json(layout.results_json)
    method = res["method_choice"]["method"]
    shifted = read_json(layout.results_json)
    vp = shifted["ensembles"]["MHe-IHo"]["val_ppl"][method]
    vp["py_code"] *= math.exp(0.04)
    from hdee.core.fsutil import atomic_write_json

    atomic_write_json(layout.results_path(1, "seed-models"), shifted)
    out = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    diffs = [endpoint(r, "final", method, "MHe-IHo", "MHo-IHo", split="val") for r in (res, shifted)]
    sd = float(np.std(diffs, ddof=1))
    assert f"sd {sd:.4f} -> {needed_repeats(sd, 0.01)} repeats" in out.output
    shutil.rmtree(layout.root)


def test_tiers_from_measured_returns(tiny_run):
    from hdee.report.tiers import lineage_returns, measured_tiers, tier_check

    res = read_json(tiny_run.layout.results_json)
    returns = lineage_returns(res)
    assert set(returns) == {"easy", "hard"} and all(r > 0 for r in returns.values())
    check = tier_check(tiny_run.cfg, res)
    low, high = sorted(returns, key=returns.get)
    assert {r["lineage"]: r["measured"] for r in check["rows"]} == {low: "easy", high: "hard"}
    assert check["agree"] == (high == "hard")
    # a lineage that gains more per step is dealt the tier with more compute
    assert measured_tiers(tiny_run.cfg, {"easy": 0.5, "hard": 0.1}) == {"easy": "hard", "hard": "easy"}
    assert measured_tiers(tiny_run.cfg, {"easy": 0.5}) is None


def test_bold_only_where_the_best_is_clear_over_documents(tiny_run, tmp_path):
    import copy

    from hdee.report.verdict import clear_best

    layout = tiny_run.copy(tmp_path / "run")
    cmp = write_report(layout)
    clear = cmp["kinds"]["final"]["clear_best"]
    md = (layout.root / "report.md").read_text()
    assert "Best per domain in bold only where its 95% interval over test documents" in md
    main = md.split("| domain | tier |")[1].split("\n\n")[0]
    for d in cmp["domains"]:
        row = next(line for line in main.splitlines() if line.startswith(f"| {d['name']} |"))
        assert ("**" in row) == (d["name"] in clear), d["name"]
    # two strategies with the same per-document losses: no domain has a clear best
    res = copy.deepcopy(read_json(layout.results_json))
    ens = res["ensembles"]
    ens["MHe-IHo"]["doc_nll"] = ens["MHo-IHo"]["doc_nll"]
    table = {s: {d["name"]: 10.0 + (s == "MHe-IHo") for d in res["domains"]} for s in ens}
    assert clear_best([res], "final", res["method_choice"]["method"], table) == set()
    del res["domains"][0]["doc_tokens"]
    assert clear_best([res], "final", res["method_choice"]["method"], table) is None


def test_per_domain_intervals_resample_documents(tiny_run, tmp_path):
    from hdee.report.verdict import document_cis

    layout = tiny_run.copy(tmp_path / "run")
    cmp = write_report(layout)
    k = cmp["kinds"]["final"]
    assert k["ci_unit"] == "documents"
    res = read_json(layout.results_json)
    method = k["method"]
    for d in res["domains"]:
        m, lo, hi = k["window_ci"]["MHe-IHo"][d["name"]]
        a = np.asarray(res["ensembles"]["MHe-IHo"]["doc_nll"][method][d["name"]])
        b = np.asarray(res["ensembles"]["MHo-IHo"]["doc_nll"][method][d["name"]])
        assert m == pytest.approx((a.sum() - b.sum()) / sum(d["doc_tokens"])) and lo <= m <= hi
        assert sum(d["doc_tokens"]) == d["tokens"]  # every scored token in exactly one document
    md = (layout.root / "report.md").read_text()
    assert "## Per-domain tests (secondary)" in md and "interval over whole test documents" in md
    assert document_cis([res], "final", method, "MHo-IHo", ["MHe-IHo"]) == {"MHe-IHo": k["window_ci"]["MHe-IHo"]}


def test_every_table_bolds_only_a_clear_best(tiny_run, tmp_path):
    from hdee.report.write import rich_table

    layout = tiny_run.copy(tmp_path / "run")
    cmp = write_report(layout)
    md = (layout.root / "report.md").read_text()
    section = md.split("## Every mixing method")[1].split("## Seed models")[0]
    assert "only where its 95% interval over test documents" in section
    for m, clear in cmp["per_method_clear"].items():
        part = section.split(f"### `{m}`")[1].split("### ")[0]
        bolded = {line.split(" | ")[0][2:] for line in part.splitlines() if line.startswith("| ") and "**" in line}
        assert bolded == clear, m
    rich = rich_table(cmp)
    assert rich.row_count == len(cmp["domains"])


def test_verdict_per_strategy_by_the_registered_rule():
    from tests.unit.strategies.test_spreads import _results

    from hdee.report.verdict import verdicts

    pre, sha = load_prereg(DEFAULT)
    n = pre.design.repeats
    rng = np.random.default_rng(1)
    runs = [_results({"MHo-IHo": 0.0, "MHe-IHo": -0.03 + rng.normal(0, 0.002), "MHo-IHe": rng.normal(0, 0.001),
                      "MHe-IHe": rng.normal(0, 0.05), "placebo": 0.02 + rng.normal(0, 0.002)}, {}) for _ in range(n)]
    v = verdicts(runs, pre.design.seed_draws, "uniform", pre, sha)
    words = {s: r["verdict"] for s, r in v["strategies"].items()}
    assert words == {"MHe-IHo": SUPPORTS, "MHo-IHe": REFUTES, "MHe-IHe": INCONCLUSIVE,
                     "placebo": "control: not below the baseline"}
    assert v["strategies"]["MHo-IHe"]["tost_p"] < pre.analysis.alpha < v["strategies"]["MHe-IHe"]["tost_p"]
    assert not v["short"] and v["recorded_sha256"] is None and not v["changed"]
    # fewer repeats than registered: inconclusive whatever the numbers
    short = verdicts(runs[:2], 1, "uniform", pre, sha)
    assert short["short"] and {r["verdict"] for r in short["strategies"].values()} <= {INCONCLUSIVE, "control: inconclusive"}
    # results made under another pre-registration say so
    runs[0]["provenance"] = {"preregistration": {"sha256": "0" * 64}}
    assert verdicts(runs, pre.design.seed_draws, "uniform", pre, sha)["changed"]
