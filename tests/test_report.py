"""The report renders saved results faithfully: win counts, ties, repeats, files."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from hdee.compare import best_method, comparison, heterogeneous_wins, repeat_stats
from hdee.errors import HdeeError
from hdee.fsutil import atomic_write_json
from hdee.layout import RunLayout
from hdee.report import write_report

STRATS = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "dense"]
METHODS = ["uniform", "prefix-posterior"]


def fake_results(seed: int = 0, n_train: int = 3, n_held: int = 2) -> dict:
    rng = random.Random(seed)
    domains = [{"name": f"t{i}", "role": "train", "tier": "easy", "tokens": 640} for i in range(n_train)]
    domains += [{"name": f"h{i}", "role": "heldout", "tier": None, "tokens": 640} for i in range(n_held)]
    ensembles = {}
    for s in STRATS:
        ppl = {m: {d["name"]: rng.uniform(5, 50) for d in domains} for m in METHODS}
        ensembles[s] = {
            "experts": ["a"] if s == "dense" else ["a", "b", "c"],
            "meta": {"seed_flops": 1e12, "domain_flops": 3e11},
            "ppl": ppl,
        }
    experts = {
        "seed-M": {"meta": {"kind": "seed", "size_name": "M", "size": {"hidden": 8}}, "ppl": {d["name"]: 60.0 for d in domains}},
        "train-a": {"meta": {"kind": "train", "size_name": "M", "size": {"hidden": 8}, "domain": "t0", "steps": 8}, "ppl": {d["name"]: 30.0 for d in domains}},
    }
    return {"config": "fake", "methods": METHODS, "domains": domains, "experts": experts, "ensembles": ensembles}


def test_ties_count_as_heterogeneous_wins():
    table = {
        "MHo-IHo": {"a": 10.0, "b": 5.0, "c": 7.0},
        "MHo-IHe": {"a": 9.0, "b": 5.0, "c": 8.0},
        "dense": {"a": 1.0, "b": 1.0, "c": 1.0},  # reported separately, never counted
    }
    h = heterogeneous_wins(table, ["a", "b", "c"])
    assert h["wins"] == 2 and h["domains"] == ["a", "b"]
    assert h["dense_best"] == ["a", "b", "c"]


def test_best_method_minimises_mean_log_ppl():
    res = fake_results()
    for ens in res["ensembles"].values():
        ens["ppl"]["prefix-posterior"] = {d: v * 0.5 for d, v in ens["ppl"]["uniform"].items()}
    assert best_method(res) == "prefix-posterior"


def test_repeat_stats_survival_needs_consistent_wins():
    base = fake_results(0)
    runs = [json.loads(json.dumps(base)) for _ in range(3)]
    for k, r in enumerate(runs):
        for m in METHODS:
            r["ensembles"]["MHo-IHo"]["ppl"][m]["t0"] = 20.0 + k * 0.01
            r["ensembles"]["MHo-IHe"]["ppl"][m]["t0"] = 10.0 + k * 0.01  # clearly better every repeat
            r["ensembles"]["MHo-IHo"]["ppl"][m]["t1"] = 20.0
            r["ensembles"]["MHo-IHe"]["ppl"][m]["t1"] = 19.0 if k == 0 else 21.0  # noise
            r["ensembles"]["MHe-IHo"]["ppl"][m]["t1"] = 30.0
    st = repeat_stats(runs, "uniform")
    assert "t0" in st["wins_surviving_noise"]
    assert "t1" not in st["wins_surviving_noise"]
    m, sd = st["mean_std"]["MHo-IHo"]["t0"]
    assert m == pytest.approx(20.01) and sd == pytest.approx(0.01)


def test_report_files_and_headline_match_results(tmp_path):
    layout = RunLayout(tmp_path)
    res = fake_results(3)
    res["default_method"] = "uniform"
    atomic_write_json(layout.results_json, res)
    exp = layout.expert_dir("train-a")
    exp.mkdir(parents=True)
    (exp / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "flops": s * 1e9, "val_loss": 5 - s * 0.1}) for s in range(5))
    )
    cmp = write_report(layout)
    md = (tmp_path / "report.md").read_text()
    for name in ("report.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the headline recomputed from the rendered main table
    table = res["ensembles"]
    domains = [d["name"] for d in res["domains"]]
    ens = [s for s in STRATS if s != "dense"]
    wins = sum(
        1
        for d in domains
        if min(table[s]["ppl"]["uniform"][d] for s in ens if s != "MHo-IHo")
        <= table["MHo-IHo"]["ppl"]["uniform"][d]
    )
    assert f"heterogeneous best in {wins} of {len(domains)} domains" in md
    assert cmp["headline"]["wins"] == wins
    for d in domains:
        row = next(line for line in md.splitlines() if line.startswith(f"| {d} |"))
        bold = re.findall(r"\*\*([0-9.]+)\*\*", row)
        assert bold and float(bold[0]) == pytest.approx(min(table[s]["ppl"]["uniform"][d] for s in STRATS), abs=0.006)
    assert "### `prefix-posterior`" in md
    dense_best = sum(1 for d in domains if table["dense"]["ppl"]["uniform"][d] < min(table[s]["ppl"]["uniform"][d] for s in ens))
    assert f"lower than every ensemble in {dense_best} of {len(domains)} domains" in md
    assert "| train-a | t0 | M | 8 | 60.00 | 30.00 | -50.0% |" in md
    seeds = md.split("## Seed models")[1]
    assert "| domain | tier | seed M |" in seeds and "| h1 | - | **60.00** |" in seeds


def test_report_without_results_is_one_clear_error(tmp_path):
    with pytest.raises(HdeeError, match="no results"):
        write_report(RunLayout(tmp_path))


def test_comparison_mean_log_ppl():
    res = fake_results(5)
    res["default_method"] = "uniform"
    cmp = comparison([res])
    domains = [d["name"] for d in res["domains"]]
    want = sum(math.log(res["ensembles"]["MHe-IHo"]["ppl"]["uniform"][d]) for d in domains) / len(domains)
    assert cmp["mean_log_ppl"]["MHe-IHo"] == pytest.approx(want)


def test_allocation_predicted_against_measured(tmp_path):
    layout = RunLayout(tmp_path)
    res = fake_results(7)
    res["default_method"] = "uniform"
    res["ensembles"]["auto"] = json.loads(json.dumps(res["ensembles"]["MHe-IHo"]))
    res["ensembles"]["auto"]["meta"].update(
        decision={
            "objective": "mean", "pilot_flops": 1e10, "expert_flops": 2.9e11, "total_flops": 3e11,
            "budget_flops": 3e11, "off_budget": 0.0,
            "experts": [
                {"lineage": "a", "iteration": 1, "domain": "t0", "size": "S", "steps": 9, "predicted_loss": 4.0},
                {"lineage": "b", "iteration": 1, "domain": "t1", "size": "L", "steps": 7, "predicted_loss": 5.0},
            ],
        },
        measured_val_loss={"t0": 4.5, "t1": 4.0},
    )
    atomic_write_json(layout.results_json, res)
    cmp = write_report(layout)
    assert cmp["decisions"]["auto"]["mean_abs_error"] == pytest.approx(0.75)
    md = (tmp_path / "report.md").read_text()
    assert "| a | 1 | t0 | S | 9 | 4.000 | 4.500 |" in md
    assert "| b | 1 | t1 | L | 7 | 5.000 | 4.000 |" in md


def test_repeats_bold_and_count_the_means(tmp_path):
    layout = RunLayout(tmp_path)
    runs = [fake_results(0), fake_results(0)]
    for r in runs:
        r["default_method"] = "uniform"
    # repeat 0 says MHo-IHe wins t0; the mean over both says MHo-IHo does
    runs[0]["ensembles"]["MHo-IHo"]["ppl"]["uniform"]["t0"] = 11.0
    runs[0]["ensembles"]["MHo-IHe"]["ppl"]["uniform"]["t0"] = 10.0
    runs[1]["ensembles"]["MHo-IHo"]["ppl"]["uniform"]["t0"] = 11.0
    runs[1]["ensembles"]["MHo-IHe"]["ppl"]["uniform"]["t0"] = 20.0
    for r in runs:
        for s in ("MHe-IHo", "dense"):
            r["ensembles"][s]["ppl"]["uniform"]["t0"] = 99.0
    atomic_write_json(layout.results_json, runs[0])
    atomic_write_json(layout.results_dir / "results-repeat1.json", runs[1])
    cmp = write_report(layout)
    assert cmp["table"]["MHo-IHe"]["t0"] == pytest.approx(15.0)
    assert "t0" not in cmp["headline"]["domains"]
    row = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| t0 |"))
    assert "**11.00 ± 0.00**" in row and "15.00 ± 7.07" in row
