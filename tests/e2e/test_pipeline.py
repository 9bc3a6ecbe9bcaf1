"""`run_experiment` / `hdee run` on configs/tiny.toml: the whole path, reruns, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hdee.core.errors import ConfigError
from hdee.core.layout import RunLayout
from hdee.pipeline.experiment import snapshot_config
from tests.helpers.paths import ROOT

TINY = ROOT / "configs/tiny.toml"


def test_snapshot_refuses_a_different_config(tmp_path, tiny):
    layout = RunLayout(tmp_path)
    snapshot_config(tiny, layout)
    first = layout.config_snapshot.read_text()
    snapshot_config(tiny, layout)  # same config: fine
    other = tiny.model_copy(update={"budget": tiny.budget.model_copy(update={"steps": {"easy": 4, "hard": 12}})})
    with pytest.raises(ConfigError, match="made by a different config \\(differs in budget.steps.easy, budget.steps.hard\\); "
                       "nothing is trained there yet; use --force") as exc:
        snapshot_config(other, layout)
    assert "\n" not in str(exc.value)
    assert layout.config_snapshot.read_text() == first  # nothing was damaged
    runtime_only = tiny.model_copy(update={"execute": tiny.execute.model_copy(update={"workers": 1})})
    snapshot_config(runtime_only, layout)  # how it runs does not change what it computes
    snapshot_config(other, layout, force=True)
    assert json.loads(layout.config_snapshot.read_text())["budget"]["steps"] == {"easy": 4, "hard": 12}


def _hdee(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from hdee.cli import main; main()", *args],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=900,
    )


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_cli_refuses_a_run_dir_of_another_config(tmp_path, tiny):
    other = tiny.model_copy(update={"seed": 7})
    snapshot_config(other, RunLayout(tmp_path))
    before = (tmp_path / "config.json").read_text()
    res = _hdee("run", str(TINY), "--run-dir", str(tmp_path), "--no-view")
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "made by a different config (differs in seed)" in lines[0]
    assert (tmp_path / "config.json").read_text() == before


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_cli_plan_prints_the_paper_budget():
    res = _hdee("plan", "configs/paper-small-close.toml")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "train-moderate-i3-M-400-" in out and "275,251,200" in out
    assert out.count("5.612e+17") >= 9  # iterations 1-3 of the three paper strategies
    assert "128,002" in out


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_cli_plan_unknown_strategy_is_one_line(tmp_path):
    text = TINY.read_text().replace('strategies = ["MHo-IHo",', 'strategies = ["bogus", "MHo-IHo",')
    (tmp_path / "c.toml").write_text(text)
    res = _hdee("plan", str(tmp_path / "c.toml"), "--no-estimate")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "unknown strategy 'bogus'" in res.stderr


# ----------------------------------------------------------------- the real thing


def _check_report_matches_results(layout: RunLayout, results: dict) -> None:
    """The report is complete, its main table is results.json's, and its win count follows from that table."""
    for name in ("report.png", "curves.png"):
        assert (layout.root / name).read_bytes()[:4] == b"\x89PNG"
    md = (layout.root / "report.md").read_text()
    method = results["method_choice"]["method"]
    assert results["method_choice"]["chosen_on"] == "val"
    assert f"mixing method `{method}`, chosen on validation windows" in md
    main = md.split("\n\n**Against `MHo-IHo`")[0]
    header = next(line for line in main.splitlines() if line.startswith("| domain |"))
    strategies = [c.strip() for c in header.strip("|").split("|")][2:]
    assert set(strategies) == set(results["ensembles"])
    table = {}
    for d in results["domains"]:
        row = next(line for line in main.splitlines() if line.startswith(f"| {d['name']} |"))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")][2:]
        table[d["name"]] = dict(zip(strategies, map(float, cells)))
        for s, v in table[d["name"]].items():
            assert v == pytest.approx(results["ensembles"][s]["ppl"][method][d["name"]], abs=0.006)
    ensembles = [s for s in strategies if s != "dense"]
    wins = sum(
        1 for d, row in table.items() if min(row[s] for s in ensembles if s != "MHo-IHo") <= row["MHo-IHo"]
    )
    assert f"Paper's count (secondary), among the ensembles only: in {wins} of {len(table)} domains a heterogeneous ensemble" in md
    for s in ensembles[1:]:
        lower = sum(1 for row in table.values() if row[s] < row["MHo-IHo"])
        assert f"| {s} | {lower} of {len(table)}" in md
    assert "## Both ensembles from the same experts" in md and results["alt"]["ensemble"] == "all"
    for section in ("## Every mixing method", "## Seed models", "## Experts against their seed", "## How this was made"):
        assert section in md
    prov = results["provenance"]
    assert prov["packages"]["torch"] and prov["hardware"]["cpus"] and prov["command"] in md
    for s in results["ensembles"]:
        cost = prov["costs"][s]
        assert cost["domain_phase"]["seconds"] > 0
        scored = set(results["ensembles"][s]["experts"]) | set(results["alt"]["ensembles"][s]["experts"])
        assert cost["scoring"]["jobs"] == len(scored)  # one score job per expert of either ensemble kind
        assert cost["seed_jobs"] and all(c["seconds"] > 0 for c in cost["seed_jobs"].values())
        assert f"| {s} | " in md.split("## How this was made")[1]


@pytest.mark.slow
def test_tiny_end_to_end_then_rerun_reuses_everything(tmp_path, tiny):
    from hdee.pipeline.experiment import run_experiment

    layout = RunLayout(tmp_path / "run")
    summary = run_experiment(tiny, layout, backend="local", workers=2, view=False)
    results = json.loads(layout.results_json.read_text())
    assert set(results["ensembles"]) == set(tiny.strategies)
    plan = json.loads(layout.plan_json.read_text())
    assert set(results["experts"]) == set(plan["experts"])
    for name, ens in results["ensembles"].items():
        assert ens["experts"] == plan["ensembles"][name]["experts"]
        for d in tiny.eval_domains:
            assert ens["ppl"]["uniform"][d] > 1.0
    _check_report_matches_results(layout, results)
    assert summary["jobs_run"] == len(plan["jobs"])
    again = run_experiment(tiny, layout, backend="local", workers=2, view=False)
    assert again["jobs_run"] == 0
    rerun = json.loads(layout.results_json.read_text())
    # the same numbers; provenance tells about the invocation that wrote them, job costs stay those of the jobs
    assert {k: v for k, v in rerun.items() if k != "provenance"} == {k: v for k, v in results.items() if k != "provenance"}
    assert rerun["provenance"]["costs"] == results["provenance"]["costs"]


@pytest.mark.slow
def test_seeds_repeat_the_domain_phase_only(tmp_path, tiny):
    from hdee.pipeline.experiment import run_experiment

    cfg = tiny.model_copy(update={"strategies": ["MHo-IHo"]})
    layout = RunLayout(tmp_path / "run")
    run_experiment(cfg, layout, backend="local", workers=2, seeds=2, view=False)
    p0 = json.loads(layout.plan_json.read_text())
    p1 = json.loads((layout.root / "plan-repeat1.json").read_text())
    shared = {j["id"] for j in p0["jobs"]} & {j["id"] for j in p1["jobs"]}
    shared_jobs = [j for j in p0["jobs"] if j["id"] in shared]
    assert {j["kind"] for j in shared_jobs} == {"prepare", "seed", "score"}
    assert all(j["expert"].startswith("seed-") for j in shared_jobs if j["kind"] == "score")  # seeds' scores
    r0 = json.loads(layout.results_json.read_text())
    r1 = json.loads((layout.results_dir / "results-repeat1.json").read_text())
    assert r0["ensembles"]["MHo-IHo"]["experts"] != r1["ensembles"]["MHo-IHo"]["experts"]
    assert r0["ensembles"]["MHo-IHo"]["ppl"] != r1["ensembles"]["MHo-IHo"]["ppl"]  # another seed, other numbers
    assert "covers domain-phase noise only" in (layout.root / "report.md").read_text()

    # repeats that retrain the seed models: their own files, next to the domain-phase repeats
    before = {p.name: p.read_bytes() for p in [*layout.results_dir.glob("results*"), *layout.root.glob("plan*.json")]}
    run_experiment(cfg, layout, backend="local", workers=2, seeds=2, vary="seed-models", view=False)
    assert {p.name: p.read_bytes() for p in [*layout.results_dir.glob("results*"), *layout.root.glob("plan*.json")]
            if p.name in before and p.name != "results.json"} == {k: v for k, v in before.items() if k != "results.json"}
    s1 = json.loads((layout.root / "plan-seed-models-repeat1.json").read_text())
    seeds0 = {j["id"]: j for j in p0["jobs"] if j["kind"] == "seed"}
    seeds1 = {j["id"]: j for j in s1["jobs"] if j["kind"] == "seed"}
    assert seeds0 and not set(seeds0) & set(seeds1)  # retrained seed models, under ids of their own
    assert {j["seed"] for j in seeds0.values()} == {cfg.seed} and cfg.seed not in {j["seed"] for j in seeds1.values()}
    for sid in seeds1:
        assert (layout.expert_dir(sid) / "model.safetensors").is_file()
    rs = json.loads((layout.results_dir / "results-seed-models-repeat1.json").read_text())
    assert rs["provenance"]["vary"] == "seed-models" and rs["ensembles"]["MHo-IHo"]["ppl"] != r1["ensembles"]["MHo-IHo"]["ppl"]
    assert "seed-model and domain-phase noise" in (layout.root / "report-seed-models.md").read_text()
    assert "covers domain-phase noise only" in (layout.root / "report.md").read_text()
