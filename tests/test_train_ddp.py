"""Two data-parallel CPU processes (gloo) follow the single-process loss curve."""

import os
import subprocess
import sys

import pytest
import torch

from hdee.train import run_train_job
from hdee.train.metrics import read_metrics
from train_helpers import make_domain, tiny_job

torch.set_num_threads(1)


def test_two_ranks_match_one_process(tmp_path):
    domains = [make_domain(tmp_path / "data", "alpha", 1), make_domain(tmp_path / "data", "beta", 2)]
    opts = {"batch_tokens": 4 * 16, "micro_batch_tokens": 1 * 16, "checkpoint_every": 3}
    single = run_train_job(tiny_job(tmp_path / "single", domains, steps=5, train=opts))
    job = tiny_job(tmp_path / "ddp", domains, steps=5, train=opts)
    job_file = tmp_path / "job.json"
    job_file.write_text(job.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "hdee.train.distributed", str(job_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = (tmp_path / "ddp" / "hdee.json")
    assert ddp.is_file()
    one = read_metrics(tmp_path / "single" / "metrics.jsonl")
    two = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one[1:], two[1:]):
        assert b["tokens"] == a["tokens"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert two[-1]["val_loss"] == pytest.approx(single["final_val_loss"], rel=1e-4)
    assert one[-1]["loss"] != pytest.approx(one[1]["loss"], rel=1e-4)  # the curve moves
    # only rank 0 wrote: no stray files from rank 1
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "single").iterdir())
