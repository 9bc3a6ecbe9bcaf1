"""The report renders saved results faithfully: win counts with their chance rates, ties, repeats,
both ensemble kinds, labels, files."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from hdee.report.compare import comparison, heterogeneous_wins
from hdee.core.errors import HdeeError
from hdee.core.fsutil import atomic_write_json
from hdee.core.layout import RunLayout
from hdee.report.write import write_report

STRATS = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "dense"]
METHODS = ["uniform", "prefix-posterior", "best-expert", "product"]
WINDOWS = 5


def fake_ensembles(rng: random.Random, domains: list[dict]) -> dict:
    ensembles = {}
    for s in STRATS:
        window_nll = {m: {d["name"]: [rng.uniform(1.6, 3.9) for _ in range(WINDOWS)] for d in domains} for m in METHODS[:3]}
        ppl = {m: {d: math.exp(sum(w) / WINDOWS) for d, w in per.items()} for m, per in window_nll.items()}
        ppl["product"] = {d["name"]: rng.uniform(5, 50) for d in domains}
        ensembles[s] = {
            "experts": ["a"] if s == "dense" else ["a", "b", "c"],
            "meta": {"seed_flops": 1e12, "domain_flops": 3e11, "flops_convention": "hardware",
                     "flops_by": {"paper": {"seed": 7e11, "domain": 2e11}, "hardware": {"seed": 1e12, "domain": 3e11}}},
            "ppl": ppl,
            "window_nll": window_nll,
            "product_windows": 0 if s == "dense" else 2,
        }
    return ensembles


def fake_results(seed: int = 0, n_train: int = 3, n_held: int = 2, alt: bool = False) -> dict:
    rng = random.Random(seed)
    domains = [{"name": f"t{i}", "role": "train", "tier": "easy", "tokens": 640, "windows": WINDOWS} for i in range(n_train)]
    domains += [{"name": f"h{i}", "role": "heldout", "tier": None, "tokens": 640, "windows": WINDOWS} for i in range(n_held)]
    experts = {
        "seed-M": {"meta": {"kind": "seed", "size_name": "M", "size": {"hidden": 8}}, "ppl": {d["name"]: 60.0 for d in domains}},
        "train-a": {"meta": {"kind": "train", "size_name": "M", "size": {"hidden": 8}, "domain": "t0", "steps": 8}, "ppl": {d["name"]: 30.0 for d in domains}},
    }
    choice = {"method": "uniform", "chosen_on": "val", "val_mean_log_ppl": {"uniform": 2.0, "prefix-posterior": 2.1}}
    res = {"config": "fake", "methods": METHODS, "domains": domains, "experts": experts, "ensemble": "final",
           "method_choice": choice, "ensembles": fake_ensembles(rng, domains)}
    if alt:
        res["alt"] = {"ensemble": "all", "method_choice": {**choice, "method": "prefix-posterior"}, "ensembles": fake_ensembles(rng, domains)}
    return res


def uniform_table(res: dict, key: str = "ensembles") -> dict:
    return {s: e["ppl"]["uniform"] for s, e in res[key].items()}


def test_ties_count_as_heterogeneous_wins():
    table = {
        "MHo-IHo": {"a": 10.0, "b": 5.0, "c": 7.0},
        "MHo-IHe": {"a": 9.0, "b": 5.0, "c": 8.0},
        "dense": {"a": 1.0, "b": 1.0, "c": 1.0},  # reported separately, never counted
    }
    h = heterogeneous_wins(table, ["a", "b", "c"])
    assert h["wins"] == 2 and h["domains"] == ["a", "b"]
    assert h["chance"] == pytest.approx(3 * 1 / 2)  # 1 heterogeneous of 2 compared ensembles
    assert h["dense_best"] == ["a", "b", "c"]


def test_wins_per_strategy_sit_beside_their_chance_rate():
    from scipy.stats import binomtest

    from hdee.report.stats import wins_against

    table = {"MHo-IHo": {d: 10.0 for d in "abcdef"}, "MHe-IHo": {"a": 9, "b": 9, "c": 9, "d": 9, "e": 11, "f": 10.0}}
    w = wins_against(table, "MHo-IHo", ["MHe-IHo"], list("abcdef"))["MHe-IHo"]
    assert (w["wins"], w["ties"], w["of"], w["chance"]) == (4, 1, 6, 2.5)  # chance: half of the 5 that differ
    assert w["sign_p"] == pytest.approx(binomtest(4, 5, 0.5, alternative="greater").pvalue)


def test_paired_t_tests_are_holm_corrected_over_strategies_and_domains():
    from scipy.stats import ttest_rel

    from hdee.report.stats import paired_tests

    base = [{"b": {"x": 10.0, "y": 10.0}, "s": {"x": 5.0 + k * 0.1, "y": 10.0 + (-1) ** k}, "u": {"x": 10.0, "y": 9.0 + k}}
            for k in range(3)]
    tables = [{"b": t["b"], "s": t["s"], "u": t["u"]} for t in base]
    res = paired_tests(tables, "b", ["s", "u"], ["x", "y"])
    assert res["df"] == 2 and res["t_crit"] == pytest.approx(4.303, abs=1e-3) and res["family"] == 4
    cell = next(c for c in res["cells"] if (c["strategy"], c["domain"]) == ("s", "x"))
    want = ttest_rel([math.log(5.0 + k * 0.1) for k in range(3)], [math.log(10.0)] * 3)
    assert cell["t"] == pytest.approx(want.statistic) and cell["p"] == pytest.approx(want.pvalue)
    ps = sorted(c["p"] for c in res["cells"])
    assert min(c["p_holm"] for c in res["cells"]) == pytest.approx(min(1.0, 4 * ps[0]))  # Holm: smallest p x family size
    assert cell["significant"] == (cell["p_holm"] < 0.05)
    assert paired_tests(tables[:1], "b", ["s"], ["x"])["cells"] is None  # one repeat: nothing to test


def test_bootstrap_interval_over_windows():
    from hdee.report.stats import bootstrap_ci

    diff = [0.1, -0.05, 0.2, 0.15, 0.05, 0.12, 0.08, 0.3]
    m, lo, hi = bootstrap_ci(diff)
    assert m == pytest.approx(sum(diff) / len(diff)) and lo < m < hi
    assert bootstrap_ci(diff) == (m, lo, hi)  # seeded: the same results give the same report
    assert bootstrap_ci([0.0] * 5) == (0.0, 0.0, 0.0)  # one expert shared by both: no difference at all


def test_report_files_and_headline_match_results(tmp_path):
    layout = RunLayout(tmp_path)
    res = fake_results(3)
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
    assert "mixing method `uniform`, chosen on validation windows disjoint from those its prior is estimated on" in md
    table = uniform_table(res)
    domains = [d["name"] for d in res["domains"]]
    ens = [s for s in STRATS if s != "dense"]
    wins = sum(1 for d in domains if min(table[s][d] for s in ens if s != "MHo-IHo") <= table["MHo-IHo"][d])
    assert f"Paper's count (secondary), among the ensembles only: in {wins} of {len(domains)} domains a heterogeneous ensemble" in md
    assert "Chance alone gives 3.3 of 5 if all 3 were equally good." in md
    assert cmp["headline"]["wins"] == wins
    for s in ("MHo-IHe", "MHe-IHo", "dense"):  # per strategy, against the baseline, beside the chance rate
        lower = sum(1 for d in domains if table[s][d] < table["MHo-IHo"][d])
        assert re.search(rf"^\| {s} \| {lower} of 5 \| 2\.5 \| ", md, re.M), s
    for d in domains:
        row = next(line for line in md.splitlines() if line.startswith(f"| {d} |"))
        bold = re.findall(r"\*\*([0-9.]+)\*\*", row)
        assert bold and float(bold[0]) == pytest.approx(min(table[s][d] for s in STRATS), abs=0.006)
    assert "### `prefix-posterior`" in md
    assert "### `best-expert` (test-set oracle" in md
    assert "### `product` (scored on the first 2 test windows per domain, the others on up to 5)" in md
    dense_best = sum(1 for d in domains if table["dense"][d] < min(table[s][d] for s in ens))
    assert f"lower than every ensemble, heterogeneous or not, in {dense_best} of {len(domains)} domains" in md
    assert "One repeat: the training noise is not tested" in md
    assert "bootstrap interval over the test windows" in md
    assert "| strategy | mean log-perplexity (all domains) | seed FLOPs (hardware) | domain-phase FLOPs (hardware, budget) | seed + domain (hardware) | seed FLOPs (paper) |" in md
    assert "| train-a | t0 | M | 8 | 60.00 | 30.00 | -50.0% |" in md
    seeds = md.split("## Seed models")[1]
    assert "| domain | tier | seed M |" in seeds and "| h1 | - | **60.00** |" in seeds


def test_window_intervals_are_of_the_reported_difference():
    res = fake_results(11)
    cmp = comparison([res])
    for s in ("MHo-IHe", "MHe-IHo"):
        for d in ("t0", "h1"):
            m, lo, hi = cmp["window_ci"][s][d]
            want = math.log(res["ensembles"][s]["ppl"]["uniform"][d]) - math.log(res["ensembles"]["MHo-IHo"]["ppl"]["uniform"][d])
            assert m == pytest.approx(want) and lo <= m <= hi


def test_both_ensemble_kinds_side_by_side(tmp_path):
    layout = RunLayout(tmp_path)
    res = fake_results(4, alt=True)
    atomic_write_json(layout.results_json, res)
    cmp = write_report(layout)
    assert list(cmp["kinds"]) == ["final", "all"] and cmp["kinds"]["all"]["method"] == "prefix-posterior"
    md = (tmp_path / "report.md").read_text()
    assert "## Both ensembles from the same experts" in md
    forest = {s: e["ppl"]["prefix-posterior"] for s, e in res["alt"]["ensembles"].items()}
    domains = [d["name"] for d in res["domains"]]
    ens = [s for s in STRATS if s != "dense"]
    n_final = sum(1 for d in domains if uniform_table(res)["dense"][d] < min(uniform_table(res)[s][d] for s in ens))
    n_forest = sum(1 for d in domains if forest["dense"][d] < min(forest[s][d] for s in ens))
    assert f"lower than every ensemble in {n_final} of 5 against the final experts; {n_forest} of 5 against the forest" in md
    mean = sum(math.log(forest["MHe-IHo"][d]) for d in domains) / len(domains)
    assert re.search(rf"^\| MHe-IHo \| [0-9.]+ \| {mean:.4f} \|", md, re.M)


def test_report_without_results_is_one_clear_error(tmp_path):
    with pytest.raises(HdeeError, match="no results"):
        write_report(RunLayout(tmp_path))


def test_results_chosen_on_test_are_refused(tmp_path):
    res = fake_results(2)
    del res["method_choice"]  # what results.json held when the main method was picked on the test split
    atomic_write_json(RunLayout(tmp_path).results_json, res)
    with pytest.raises(HdeeError, match="predate the validation choice of the mixing method; recompute them with `hdee eval RUN_DIR`"):
        write_report(RunLayout(tmp_path))


def test_comparison_mean_log_ppl():
    res = fake_results(5)
    cmp = comparison([res])
    domains = [d["name"] for d in res["domains"]]
    want = sum(math.log(res["ensembles"]["MHe-IHo"]["ppl"]["uniform"][d]) for d in domains) / len(domains)
    assert cmp["mean_log_ppl"]["MHe-IHo"] == (pytest.approx(want), 0.0)


def test_allocation_predicted_against_measured(tmp_path):
    layout = RunLayout(tmp_path)
    res = fake_results(7)
    res["ensembles"]["auto"] = json.loads(json.dumps(res["ensembles"]["MHe-IHo"]))
    res["ensembles"]["auto"]["meta"].update(
        decision={
            "objective": "mean", "pilot_flops": 1e10, "expert_flops": 2.9e11, "total_flops": 3e11,
            "budget_flops": 3e11, "off_budget": 0.0, "flops_convention": "hardware",
            "experts": [
                {"lineage": "a", "iteration": 1, "domain": "t0", "size": "S", "steps": 9, "predicted_loss": 4.0},
                {"lineage": "b", "iteration": 1, "domain": "t1", "size": "L", "steps": 7, "predicted_loss": 5.0},
                {"lineage": "a", "iteration": 2, "domain": "t2", "size": "S", "steps": 9, "predicted_loss": 3.0},
            ],
        },
        measured_val_loss={"t0": 4.5, "t1": 4.0, "t2": 3.2},
    )
    atomic_write_json(layout.results_json, res)
    cmp = write_report(layout)
    err = cmp["decisions"]["auto"]["errors"]
    assert err["by_iteration"][1] == {"n": 2, "mae": pytest.approx(0.75), "bias": pytest.approx(0.25)}
    assert err["by_iteration"][2]["mae"] == pytest.approx(0.2)
    md = (tmp_path / "report.md").read_text()
    assert "| a | 1 | t0 | S | 9 | 4.000 | 4.500 |" in md
    assert "| b | 1 | t1 | L | 7 | 5.000 | 4.000 |" in md
    assert "| 1 | 2 | 0.750 | +0.250 |" in md and "| 2 | 1 | 0.200 | -0.200 |" in md
    assert "hardware count" in md


def test_repeats_bold_and_count_the_means(tmp_path):
    layout = RunLayout(tmp_path)
    runs = [fake_results(0), fake_results(0)]
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
    assert cmp["table"]["MHo-IHe"]["t0"] == pytest.approx(math.sqrt(10.0 * 20.0))  # geometric: the tests use logs
    assert "t0" not in cmp["headline"]["domains"]
    md = (tmp_path / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| t0 |"))
    assert "**11.00 ± 0.000**" in row and f"14.14 ± {math.log(2) / math.sqrt(2):.3f}" in row
    assert "Paired t-test over 2 repeats" in md and "t critical value 12.71" in md
    assert "Holm-corrected over all 10 (strategy, domain) pairs" in md  # MHo-IHe and MHe-IHo x 5 domains


def test_repeats_that_chose_differently_share_one_method_chosen_on_validation():
    runs = [fake_results(0), fake_results(1)]
    runs[1]["method_choice"] = {"method": "prefix-posterior", "chosen_on": "val", "val_mean_log_ppl": {"uniform": 2.3, "prefix-posterior": 2.25}}
    cmp = comparison(runs)  # uniform: (2.0 + 2.3) / 2 = 2.15 against prefix-posterior (2.1 + 2.25) / 2 = 2.175
    assert cmp["method"] == "uniform" and cmp["method_choice"]["pooled"]


def test_report_says_how_it_was_made_and_which_noise_repeats_cover(tmp_path):
    layout = RunLayout(tmp_path)

    def prov(seconds: float, gpus: int) -> dict:
        cost = {"seconds": seconds, "gpu_hours": seconds * gpus / 3600, "jobs": 1}
        return {"hdee": "9.9", "git": {"commit": "abcdef0123456789", "dirty": True}, "python": "3.11.7",
                "packages": {"torch": "2.4.0", "transformers": "5.0", "tokenizers": "0.22", "datasets": None, "numpy": "2.0"},
                "platform": "Linux", "hardware": {"host": "node1", "cpu": "Some CPU", "cpus": 16, "gpus": ["H100", "H100"]},
                "command": "hdee run c.toml --seeds 2 --vary seed-models",
                "costs": {s: {"seed_jobs": {"seed-M": {"seconds": 3600.0, "gpus": gpus}}, "domain_phase": cost, "scoring": cost}
                          for s in STRATS}}

    for k, gpus in ((0, 1), (1, 1)):
        res = fake_results(20 + k)
        res["provenance"] = prov(1800.0, gpus)
        name = "results.json" if k == 0 else "results-seed-models-repeat1.json"
        atomic_write_json(layout.results_dir / name, res)
    cmp = write_report(layout, "seed-models")
    md = (tmp_path / "report-seed-models.md").read_text()
    assert not (tmp_path / "report.md").exists() and cmp["repeats"] == 2 and cmp["vary"] == "seed-models"
    assert "Geometric mean over 2 repeats ± the standard deviation of log-perplexity: each repeat retrains the seed models" in md
    made = md.split("## How this was made")[1]
    assert "hdee 9.9, commit `abcdef012345` with uncommitted changes" in made and "torch 2.4.0" in made
    assert "2 x H100" in made and "Command: `hdee run c.toml --seeds 2 --vary seed-models`." in made
    # the seed model once, the domain phase and scoring of both repeats: 1 + 1 + 1 h of GPU time
    assert "| MHo-IHo | 1:00:00 | 1:00:00 | 1:00:00 | 3.000 |" in made
    domain_only = write_report(layout)  # the default report reads the domain-phase repeats: none here
    assert domain_only["repeats"] == 1 and "Mean ±" not in (tmp_path / "report.md").read_text()


def test_inference_cost_section_and_plot(tmp_path):
    layout = RunLayout(tmp_path)
    res = fake_results(5, alt=True)
    for key in ("ensembles", "alt"):
        ensembles = res[key] if key == "ensembles" else res["alt"]["ensembles"]
        for s, ens in ensembles.items():
            k = len(ens["experts"]) * (3 if key == "alt" else 1)
            ens["inference_flops"] = {m: {d["name"]: 1e6 * k * (1 + i) for d in res["domains"]} for i, m in enumerate(METHODS)}
            ens["routing"] = {"router": "tfidf" if k > 1 else None, "route_tokens": 16, "prefix_model": "seed-S-1",
                              "prefix_model_reason": "the cheapest seed model", "router_file": None, "top1_share": {}}
    atomic_write_json(layout.results_json, res)
    cmp = write_report(layout)
    md = (tmp_path / "report.md").read_text()
    assert (tmp_path / "inference.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "a `tfidf` router built from each expert's own train split reads the first 16 tokens" in md
    assert "`seed-S-1` (the cheapest seed model)" in md
    ens = res["ensembles"]["MHo-IHe"]["ppl"]["prefix-posterior"]
    trained = math.exp(sum(math.log(ens[f"t{i}"]) for i in range(3)) / 3)
    held = math.exp(sum(math.log(ens[f"h{i}"]) for i in range(2)) / 2)
    assert f"| final experts | MHo-IHe | prefix-posterior | {trained:.2f} | {held:.2f} | 6e+06 | 2.00 |" in md
    assert "| forest | MHo-IHe | uniform |" in md and cmp["inference"]["all"]["MHo-IHe"]["methods"]["uniform"]["flops"] == 9e6
    assert "| final experts | dense | the model alone |" in md and cmp["inference"]["final"]["dense"]["methods"]["uniform"]["flops"] == 1e6
    assert list(cmp["inference"]["final"]["dense"]["methods"]) == ["uniform"]  # one model, one point


def test_a_single_model_stays_the_model_alone_under_routed_methods(tmp_path):
    """Routing one model is a no-op, so the dense column of a routed method's table is the model alone,
    not the model with its first tokens scored by the routing prefix model."""
    layout = RunLayout(tmp_path)
    res = fake_results(7)
    res["methods"] = METHODS + ["routed-top1"]
    for ens in res["ensembles"].values():
        ens["ppl"]["routed-top1"] = {d["name"]: 99.0 for d in res["domains"]}
        ens["inference_flops"] = {m: {d["name"]: 2e6 if m == "routed-top1" else 1e6 for d in res["domains"]} for m in res["methods"]}
    atomic_write_json(layout.results_json, res)
    cmp = write_report(layout)
    assert cmp["per_method"]["routed-top1"]["dense"] == res["ensembles"]["dense"]["ppl"]["uniform"]
    assert cmp["per_method"]["routed-top1"]["MHo-IHo"] == {d["name"]: 99.0 for d in res["domains"]}
    assert list(cmp["inference"]["final"]["dense"]["methods"]) == ["uniform"]
    assert "routed-top1" in cmp["inference"]["final"]["MHo-IHo"]["methods"]
    rows = [ln for ln in (tmp_path / "report.md").read_text().splitlines() if ln.startswith("| final experts | dense |")]
    assert rows == [rows[0]] and "| the model alone |" in rows[0] and "| 1e+06 |" in rows[0]


def test_results_without_inference_flops_still_report(tmp_path):
    layout = RunLayout(tmp_path)
    atomic_write_json(layout.results_json, fake_results(6))
    cmp = write_report(layout)
    assert not any(cmp["inference"].values()) and not (tmp_path / "inference.png").exists()
    assert "## Inference cost" not in (tmp_path / "report.md").read_text()


def test_the_report_reads_cold(tmp_path):
    """Strategies defined and the paper named before the first table; the paper's count and the dense line agree."""
    layout = RunLayout(tmp_path)
    atomic_write_json(layout.results_json, fake_results(3))
    write_report(layout)
    md = (tmp_path / "report.md").read_text()
    head = md.split("## Results")[0].split("## Regime gates")[0]  # the definitions come before any table
    assert "## What this compares" in head and "Ersoy, Kolehmainen and Passamani Andrade, 2025" in head
    assert "**MHo / MHe**: model-homogeneous" in head and "**IHo / IHe**: iteration-homogeneous" in head
    assert "- `MHo-IHo`: Every expert at the baseline size and steps (the baseline every other strategy" in head
    assert "- `dense`: " in head and "(a single model, not an ensemble)" in head
    assert "|" not in head  # no table before the definitions end
    assert "among the ensembles only" in md and "Outside that count, the compute-matched `dense` model" in md


def test_inference_plot_has_a_panel_per_kind_and_a_row_per_method(tmp_path, monkeypatch):
    import hdee.report.write as report

    figs = []
    monkeypatch.setattr(report, "_save_png", lambda fig, path: figs.append(fig))
    res = fake_results(5, alt=True)
    for ensembles in (res["ensembles"], res["alt"]["ensembles"]):
        for ens in ensembles.values():
            ens["inference_flops"] = {m: {d["name"]: 1e6 * (1 + i) for d in res["domains"]} for i, m in enumerate(METHODS)}
    atomic_write_json(RunLayout(tmp_path).results_json, res)
    cmp = write_report(RunLayout(tmp_path))
    fig = figs[-1]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [f"{k} ensembles" for k in cmp["inference"] if cmp["inference"][k]]
    rows = [t.get_text() for t in panels[0].get_yticklabels()]
    assert rows and all("FLOPs/token)" in r for r in rows) and rows[0].startswith(next(iter(cmp["inference"]["final"]["MHo-IHo"]["methods"])))


def test_pilot_curves_are_labelled_by_domain(tmp_path):
    from hdee.report.training_curves import curve_lines

    layout = RunLayout(tmp_path)
    for i, dom in enumerate(("alpha", "beta")):
        d = layout.expert_dir(f"pilot-{dom}-S-{i}")
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("\n".join(json.dumps({"flops": s * 1e9, "val_loss": 5 - s * 0.1}) for s in range(3)))
        (d / "hdee.json").write_text(json.dumps({"kind": "pilot", "size_name": "S", "domains": [dom]}))
    lines = curve_lines(layout)
    assert sorted(ln["label"] for ln in lines) == ["alpha (S)", "beta (S)"] and {ln["panel"] for ln in lines} == {"pilots"}


def test_the_intro_says_what_the_seeds_trained_on_and_defines_each_strategy_in_full():
    from hdee.report.intro import intro

    disjoint = "\n".join(intro(["MHo-IHo", "MHe-IHo", "MHe-IHo.close"], {"domains": ["seed_licences"], "disjoint": True}))
    assert "trained on a seed corpus that no expert domain shares (`seed_licences`)" in disjoint
    shared = "\n".join(intro(["MHo-IHo"], {"domains": ["a", "b"], "disjoint": False}))
    assert "trained on `a`, `b`, the experts' own domains among them" in shared
    # a docstring's whole first paragraph, not its first line cut mid-sentence
    assert "baseline steps (scaled alike when its extra seed models, `budget.charge = \"total\"`, or its pilots" in disjoint
    assert "- `MHe-IHo.close`: MHe-IHo at the size spread `budget.spreads.close` in place of `budget.sizes`" in disjoint
