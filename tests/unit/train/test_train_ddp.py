"""Two data-parallel processes follow the single-process loss curve; ranks map to GPUs or are refused."""

import os
import subprocess
import sys

import pytest
import torch

from hdee.core.errors import TrainingError
from hdee.expert_dir import read_metrics
from hdee.train import distributed, run_train_job
from hdee.train.device import rank_device
from tests.helpers.train_helpers import make_domain, tiny_job

torch.set_num_threads(1)


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path):
    domains = [make_domain(tmp_path / "data", "alpha", 1), make_domain(tmp_path / "data", "beta", 2)]
    opts = {"batch_tokens": 4 * 16, "micro_batch_tokens": 1 * 16, "checkpoint_every": 3}
    single = run_train_job(tiny_job(tmp_path / "single", domains, steps=5, train=opts))
    job = tiny_job(tmp_path / "ddp", domains, steps=5, train=opts)
    job_file = tmp_path / "job.json"
    job_file.write_text(job.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if torch.cuda.device_count() < 2:  # two ranks need two GPUs; with fewer, both train on the CPU (gloo)
        env["CUDA_VISIBLE_DEVICES"] = ""
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


def test_ranks_map_to_their_gpu_and_more_ranks_than_gpus_are_refused():
    assert rank_device(0, 2, gpus=0) == torch.device("cpu")
    assert rank_device(1, 2, gpus=2) == torch.device("cuda", 1)
    assert rank_device(3, 4, gpus=8) == torch.device("cuda", 3)
    with pytest.raises(TrainingError, match=r"2 ranks on this node but 1 GPU visible; start at most 1") as exc:
        rank_device(1, 2, gpus=1)
    assert "\n" not in str(exc.value)


def test_launch_with_more_ranks_than_gpus_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    job_file = tmp_path / "job.json"
    job_file.write_text(tiny_job(tmp_path / "e", [make_domain(tmp_path / "data", "alpha", 1)]).model_dump_json())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for rank, lines in (("0", 1), ("1", 0)):  # only the first rank of the node says it
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert distributed.main([str(job_file)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == lines
        assert not lines or err.startswith("error: 2 ranks on this node but 1 GPU visible")
    assert not (tmp_path / "e").exists()
