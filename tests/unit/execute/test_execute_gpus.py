"""GPUs in the executors, checked on CPU: local workers round-robin over GPUs, Ray tasks ask for (fractions of) GPUs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hdee.config import ExecuteConfig
from hdee.execute import devices
from hdee.execute.jobs import write_record
from hdee.execute.local import LocalExecutor
from hdee.plan import Job
from tests.helpers.paths import CONFIGS, ROOT, pythonpath

WORKERS = 3


def gpu_runner(spec_json: str, run_dir: str, progress=None) -> dict:
    """Says which process and GPU ran it, after waiting until every worker holds a job (so all of them start)."""
    job = Job.model_validate_json(spec_json)
    arrived = Path(run_dir) / "arrived"
    arrived.mkdir(exist_ok=True)
    (arrived / job.id).write_text("")
    deadline = time.time() + 120
    while len(list(arrived.iterdir())) < WORKERS and time.time() < deadline:
        time.sleep(0.05)
    out = Path(run_dir) / f"{job.id}.txt"
    out.write_text("")
    write_record(job, run_dir, {}, [out])
    return {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "given": devices._given}


@pytest.mark.slow  # starts worker processes, each importing torch
def test_local_workers_take_the_visible_gpus_in_turn(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    jobs = [Job(id=f"j{i}", kind="train", steps=1) for i in range(WORKERS)]
    with LocalExecutor(tmp_path, workers=WORKERS, runner=gpu_runner, gpus=["5", "7"]) as ex:
        results = ex.run(jobs)
    assert len({r["pid"] for r in results.values()}) == WORKERS
    assert sorted(r["gpu"] for r in results.values()) == ["5", "5", "7"]
    # GPU-hours count what each worker was given: two workers share GPU 5, one has GPU 7 to itself
    assert sorted((r["gpu"], r["given"]) for r in results.values()) == [("5", 0.5), ("5", 0.5), ("7", 1.0)]
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the parent keeps seeing every GPU


def test_worker_count_and_assignment_rules(monkeypatch):
    assert devices.local_workers(None, ["0", "1"], workers_per_gpu=3, cpu_default=2) == 6
    assert devices.local_workers(None, [], workers_per_gpu=3, cpu_default=2) == 2
    assert devices.local_workers(5, ["0"], workers_per_gpu=1, cpu_default=2) == 5  # asked for: shared round-robin
    assert [devices.worker_gpu(i, ["a", "b", "c"]) for i in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    assert devices.worker_gpu(0, []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert devices.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,3")
    assert devices.visible_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_gpus() == []


def test_ray_resource_requests():
    assert devices.ray_task_options("train", 2, 0.25) == {"num_cpus": 2, "num_gpus": 0.25}
    assert devices.ray_task_options("score", 1, 2) == {"num_cpus": 1, "num_gpus": 2}
    assert devices.ray_task_options("prepare", 1, 1) == {"num_cpus": 1, "num_gpus": 0}  # tokenizing needs no GPU


def test_gpus_per_job_is_a_share_of_one_gpu_at_most():
    assert ExecuteConfig(gpus_per_job=0.25).gpus_per_job == 0.25
    assert ExecuteConfig(gpus_per_job=1).gpus_per_job == 1
    for many in (2, 1.5, 8):  # a job is one process on one device: more would be reserved and never used
        with pytest.raises(ValueError, match=f"gpus_per_job {many:g}: a job trains in one process on one GPU, so at most 1"):
            ExecuteConfig(gpus_per_job=many)


def test_a_config_asking_two_gpus_per_job_is_one_line(tmp_path):
    from tests.helpers.cli_helpers import cli_error
    from typer.testing import CliRunner

    from hdee.cli.app import app

    text = (CONFIGS / "tiny.toml").read_text() + "\n[execute]\ngpus_per_job = 2\n"
    (tmp_path / "two.toml").write_text(text)
    res = CliRunner().invoke(app, ["run", str(tmp_path / "two.toml"), "--run-dir", str(tmp_path / "run")])
    assert "gpus_per_job 2: a job trains in one process on one GPU" in cli_error(res)
    assert not (tmp_path / "run").exists()


def test_gpu_share_of_round_robin_workers():
    assert [devices.gpu_share(i, ["a", "b"], 3) for i in range(3)] == [0.5, 1.0, 0.5]
    assert [devices.gpu_share(i, ["a"], 4) for i in range(4)] == [0.25] * 4
    assert devices.gpu_share(0, ["a", "b"], 2) == 1.0 and devices.gpu_share(0, [], 2) == 0.0


def test_job_gpus_count_what_was_given(monkeypatch):
    import torch

    from hdee.core.provenance import job_cost

    monkeypatch.setattr(devices, "_given", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.job_gpus("train") == 1.0  # no executor said otherwise: the one device the trainer uses
    devices.give(0.25)
    assert devices.job_gpus("train") == 0.25 and devices.job_gpus("score") == 0.25
    assert devices.job_gpus("prepare") == 0.0  # tokenizing uses no GPU
    assert job_cost(7200, devices.job_gpus("train"))["gpus"] == 0.25
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.job_gpus("train") == 0.0  # given a GPU by the scheduler but ran on the CPU


def ray_gpu_runner(spec_json: str, run_dir: str, progress=None) -> dict:
    import ray

    job = Job.model_validate_json(spec_json)
    out = Path(run_dir) / f"{job.id}.txt"
    out.write_text("")
    write_record(job, run_dir, {}, [out])
    return {"gpus": [str(g) for g in ray.get_gpu_ids()], "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "given": devices._given}


@pytest.mark.slow
def test_ray_places_fractional_gpu_jobs_on_one_gpu(tmp_path):
    ray = pytest.importorskip("ray")
    from hdee.execute.ray import RayExecutor

    # a CPU machine can declare a GPU to Ray: scheduling and CUDA_VISIBLE_DEVICES work as on a real one
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath(ROOT / "src")}})
    try:
        jobs = [Job(id="prep", kind="prepare"), Job(id="a", kind="train", steps=1), Job(id="b", kind="train", steps=1)]
        with RayExecutor(tmp_path, gpus_per_job=0.5, runner=ray_gpu_runner) as ex:
            results = ex.run(jobs)
    finally:
        ray.shutdown()
    assert results["a"] == results["b"] == {"gpus": ["0"], "visible": "0", "given": 0.5}  # half a GPU each, the same one
    assert results["prep"]["gpus"] == [] and results["prep"]["given"] == 0.0
