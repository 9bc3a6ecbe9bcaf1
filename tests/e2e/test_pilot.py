"""`hdee run --pilot`: every job trains, the validation split alone is scored, the gates and the power
calculation read the pilots, and no test-split number exists afterwards."""

from __future__ import annotations

import math

import pytest
import torch

from hdee.core.fsutil import read_json
from hdee.pipeline import experiment as pipeline
from hdee.report.gates import regime_gates
from tests.helpers.tiny_run import InlineExecutor

pytestmark = pytest.mark.slow


def test_a_pilot_reads_no_test_split_and_feeds_the_gates_and_power(tiny_run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hdee.cli import app

    layout = tiny_run.copy(tmp_path / "run")
    scores = layout.root / "scores"
    for f in scores.rglob("*.test.npy*"):  # the copy's test scores go: a pilot must not make new ones
        f.unlink()
    for f in {*layout.results_dir.iterdir(), *layout.root.glob("report*"), *layout.root.glob("*.png")}:
        f.unlink()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr(pipeline, "make_executor", lambda cfg, run_dir, **kw: InlineExecutor(run_dir))
        summary = pipeline.run_experiment(tiny_run.cfg, layout, seeds=2, view=False, force=True, pilot=True)
    finally:
        torch.set_num_threads(threads)
    assert not list(scores.rglob("*.test.npy"))  # repeat 1's experts were scored on val only, too
    assert sorted(p.name for p in layout.results_dir.iterdir()) == ["pilot-repeat1.json", "pilot.json"]
    assert not list(layout.root.glob("report*"))
    pilot = read_json(layout.pilot_path(0))
    assert pilot["pilot"] and pilot["split"] == "val"
    assert "ppl" not in next(iter(pilot["experts"].values())) and "ppl" not in pilot["ensembles"]["MHo-IHo"]
    # the same validation numbers as the full evaluation of the same experts
    full = read_json(tiny_run.layout.results_json)
    method = full["method_choice"]["method"]
    assert pilot["method_choice"]["method"] == method
    for d, v in full["ensembles"]["MHe-IHo"]["val_ppl"][method].items():
        assert pilot["ensembles"]["MHe-IHo"]["val_ppl"][method][d] == pytest.approx(v, rel=1e-9)
    g = summary["pilot"]["gates"]
    assert g == regime_gates([pilot, read_json(layout.pilot_path(1))], [pilot], method) and g["c"]["passed"]
    res = CliRunner().invoke(app, ["power", str(layout.root), "--margin", "0.05", "--vary", "domain-phase"])
    assert res.exit_code == 0, res.output
    assert "over 2 repeats" in res.output and "MHe-IHo: mean" in res.output
    trained = [d["name"] for d in pilot["domains"] if d["role"] == "train"]
    endpoint = lambda r: sum(math.log(r["ensembles"]["MHe-IHo"]["val_ppl"][method][d]) - math.log(  # noqa: E731
        r["ensembles"]["MHo-IHo"]["val_ppl"][method][d]) for d in trained) / len(trained)
    runs = [pilot, read_json(layout.pilot_path(1))]
    assert f"MHe-IHo: mean {sum(map(endpoint, runs)) / 2:+.4f}" in res.output
