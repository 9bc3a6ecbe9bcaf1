"""Kill `hdee run` of the tiny config (SIGKILL, whole process group) in every kind of job runner;
the rerun finishes with the numbers of an uninterrupted run (the session's `tiny_run`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow

# one kill per job runner (hdee.execute.kinds), in the order the run reaches them: `dense` and
# `pilot` jobs run the same trainer as `seed` (from scratch) and `train` (from a parent); a kill
# in `prepare` is tests/unit/data/test_data_prepare.py's
FAULTS = ["seed:1", "train:2", "score:3", "evaluate:1"]


def _run(config: Path, run_dir: Path, fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HDEE_FAULT"}
    if fault:
        env["HDEE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-c", "from hdee.cli import main; main()", "run", str(config), "--run-dir", str(run_dir),
         "--no-view", "--workers", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        start_new_session=True,  # its own process group: the fault kills the run and its workers only
    )


def _numbers(results: dict) -> dict:
    return {
        "experts": {k: v["ppl"] for k, v in results["experts"].items()},
        "ensembles": {k: v["ppl"] for k, v in results["ensembles"].items()},
    }


def test_killed_in_every_job_kind_then_finished_equals_uninterrupted(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    reference = json.loads(tiny_run.layout.results_json.read_text())
    for fault in FAULTS:
        res = _run(tiny_run.config_path, run_dir, fault)
        assert res.returncode == -signal.SIGKILL, f"{fault}: expected a kill, got rc {res.returncode}: {res.stderr[-2000:]}"
    res = _run(tiny_run.config_path, run_dir, None)
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads((run_dir / "results/results.json").read_text())
    assert _numbers(results) == _numbers(reference)
    # the interrupted training jobs resumed: every expert was finished exactly once
    assert not list((run_dir / "experts").glob("*/state"))
