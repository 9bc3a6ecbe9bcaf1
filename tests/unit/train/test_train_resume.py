"""A job killed mid-run and rerun ends with the same bytes as an uninterrupted run."""

import subprocess
import sys

import pytest

from hdee.expert_dir import read_metrics
from tests.helpers.paths import ROOT
from tests.helpers.train_helpers import make_domain

SCRIPT = """
import os, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.helpers.train_helpers import tiny_job
from hdee.train import run_train_job

out, kill_at = Path(sys.argv[1]), int(sys.argv[2])
domains = [Path(p) for p in sys.argv[3:]]

def die(row):
    if row["step"] == kill_at:
        os._exit(17)  # abrupt death: no cleanup, no exception handling

run_train_job(tiny_job(out, domains, steps=9, train={{"checkpoint_every": 2, "eval_every": 2}}), progress=die)
"""


def _run(tmp_path, out, kill_at, domains):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    return subprocess.run(
        [sys.executable, str(script), str(out), str(kill_at), *map(str, domains)], capture_output=True, text=True, timeout=300
    )


def _numbers(rows):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "flops_per_s")} for r in rows]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights_and_metrics(tmp_path):
    domains = [make_domain(tmp_path / "data", "alpha", 1), make_domain(tmp_path / "data", "beta", 2)]
    clean = _run(tmp_path, tmp_path / "clean", -1, domains)
    assert clean.returncode == 0, clean.stderr
    killed = _run(tmp_path, tmp_path / "killed", 5, domains)  # dies after step 5; state holds step 4
    assert killed.returncode == 17
    assert not (tmp_path / "killed" / "hdee.json").exists()
    assert (tmp_path / "killed" / "state" / "state.json").exists()
    resumed = _run(tmp_path, tmp_path / "killed", -1, domains)
    assert resumed.returncode == 0, resumed.stderr
    a = (tmp_path / "clean" / "model.safetensors").read_bytes()
    b = (tmp_path / "killed" / "model.safetensors").read_bytes()
    assert a == b
    assert _numbers(read_metrics(tmp_path / "clean" / "metrics.jsonl")) == _numbers(
        read_metrics(tmp_path / "killed" / "metrics.jsonl")
    )
