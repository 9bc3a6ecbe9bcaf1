"""Kill `hdee run configs/tiny.toml` (SIGKILL, whole process group) in every job kind; the rerun
finishes with the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hdee.config import load_config
from hdee.core.layout import RunLayout
from tests.helpers.paths import ROOT

TINY = ROOT / "configs/tiny.toml"

pytestmark = pytest.mark.slow

# one kill per job kind, in the order the run reaches them
FAULTS = ["prepare:1", "seed:1", "train:2", "dense:1", "score:3", "evaluate:1"]


def _run(run_dir: Path, fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HDEE_FAULT"}
    if fault:
        env["HDEE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-c", "from hdee.cli import main; main()", "run", str(TINY), "--run-dir", str(run_dir),
         "--no-view", "--workers", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
        start_new_session=True,  # its own process group: the fault kills the run and its workers only
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    from hdee.pipeline.experiment import run_experiment

    layout = RunLayout(tmp_path_factory.mktemp("reference"))
    run_experiment(load_config(TINY), layout, backend="local", workers=2, view=False)
    return json.loads(layout.results_json.read_text())


def _numbers(results: dict) -> dict:
    return {
        "experts": {k: v["ppl"] for k, v in results["experts"].items()},
        "ensembles": {k: v["ppl"] for k, v in results["ensembles"].items()},
    }


def test_killed_in_every_job_kind_then_finished_equals_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "run"
    for fault in FAULTS:
        res = _run(run_dir, fault)
        assert res.returncode == -signal.SIGKILL, f"{fault}: expected a kill, got rc {res.returncode}: {res.stderr[-2000:]}"
    res = _run(run_dir, None)
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads((run_dir / "results/results.json").read_text())
    assert _numbers(results) == _numbers(reference)
    # the interrupted training jobs resumed: every expert was finished exactly once
    assert not list((run_dir / "experts").glob("*/state"))
