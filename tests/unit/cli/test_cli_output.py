"""Output off a terminal keeps every cell whole; curves.png has one panel per lineage, coloured by strategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hdee.report.training_curves import curve_lines, plot_curves
from hdee.core.fsutil import atomic_write_json
from hdee.core.layout import RunLayout
from hdee.report.write import _save_png
from tests.helpers.paths import ROOT



def _piped(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # what `| cat` sees
    return subprocess.run([sys.executable, "-c", "from hdee.cli import main; main()", *args],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # starts hdee in new processes, each importing torch
def test_plan_through_a_pipe_prints_whole_numbers_and_ids():
    res = _piped("plan", "configs/embedded.toml", "--no-estimate")
    assert res.returncode == 0, res.stderr
    assert "…" not in res.stdout
    assert "2.450e+12" in res.stdout and "1,001,472" in res.stdout
    assert "train-moderate-i3-M-50-" in res.stdout and "MHo-IHo, MHo-IHe, MHe-IHo, MHe-IHe, dense, auto" in res.stdout
    as_json = _piped("plan", "configs/embedded.toml", "--json", "-")
    assert as_json.returncode == 0, as_json.stderr
    plan = json.loads(as_json.stdout)
    assert plan["budget_by"]["paper"] == 2449833984000.0  # 9 x 6 x 442,944 x 50 x 2,048, in full
    assert plan["budget_flops"] == plan["budget_by"][plan["flops_convention"]]


def _expert(layout: RunLayout, job_id: str, kind: str, size: str, flops: float, lineage=None, parent=None, losses=(5.0, 4.0)):
    d = layout.expert_dir(job_id)
    d.mkdir(parents=True)
    atomic_write_json(d / "hdee.json", {"kind": kind, "size_name": size, "flops": flops, "lineage": lineage,
                                        "meta": {"parent_id": parent}})
    rows = [{"step": i, "flops": flops * i / (len(losses) - 1), "val_loss": v} for i, v in enumerate(losses)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "torn')


def test_curves_one_panel_per_lineage_coloured_by_strategy(tmp_path):
    layout = RunLayout(tmp_path)
    _expert(layout, "seed-M-1", "seed", "M", 100.0)
    _expert(layout, "seed-S-1", "seed", "S", 80.0)
    _expert(layout, "train-a-i1-M-1", "train", "M", 10.0, "a", "seed-M-1")
    _expert(layout, "train-a-i2-M-1", "train", "M", 10.0, "a", "train-a-i1-M-1")
    _expert(layout, "train-a-i2-M-2", "train", "M", 12.0, "a", "train-a-i1-M-1")
    _expert(layout, "train-b-i1-S-1", "train", "S", 8.0, "b", "seed-S-1")
    _expert(layout, "dense-M-1", "dense", "M", 40.0, None, "seed-M-1")
    _expert(layout, "train-b-i1-S-3", "train", "S", 8.0, "b", "seed-S-1")
    jobs = [{"id": "train-a-i1-M-1", "used_by": ["MHo-IHe", "MHo-IHo"]}, {"id": "train-a-i2-M-1", "used_by": ["MHo-IHo"]},
            {"id": "train-b-i1-S-1", "used_by": ["MHe-IHo"]}, {"id": "dense-M-1", "used_by": ["dense"]}]
    atomic_write_json(layout.plan_json, {"jobs": jobs})
    atomic_write_json(layout.root / "plan-repeat1.json", {"jobs": [{"id": "train-a-i2-M-2", "used_by": ["MHo-IHe"]}]})
    atomic_write_json(layout.root / "plan-seed-models-repeat1.json", {"jobs": [{"id": "train-b-i1-S-3", "used_by": ["MHe-IHe"]}]})
    lines = {ln["job"]: ln for ln in curve_lines(layout)}
    assert {ln["panel"] for ln in lines.values()} == {"seed models", "lineage a", "lineage b", "dense"}
    assert lines["seed-S-1"]["label"] == "seed S"
    assert lines["train-a-i1-M-1"]["label"] == "MHo-IHo+MHo-IHe"  # strategy order, not plan order
    assert lines["train-a-i2-M-2"]["label"] == "MHo-IHe"  # from the repeat's plan
    assert lines["train-b-i1-S-3"]["label"] == "MHe-IHe"  # from a repeat that retrained the seeds
    assert lines["train-a-i2-M-1"]["x"] == [10.0, 20.0]  # continues where its parent's FLOPs ended
    assert lines["train-a-i1-M-1"]["x"] == [0.0, 10.0] and lines["train-a-i1-M-1"]["y"] == [5.0, 4.0]
    assert plot_curves(layout, tmp_path / "curves.png", _save_png) == 8
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
