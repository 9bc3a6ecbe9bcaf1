"""The Slurm backend through submitit's LocalExecutor: the executors' contract (order, skipping
verified work, one-line failures), its preflight in every job, and its refusals."""

from __future__ import annotations

import time

import pytest

from tests.helpers.paths import ROOT, pythonpath

import hdee
from hdee.config import SlurmConfig
from hdee.core.errors import ExecutionError, LayoutError
from hdee.plan import Job

pytest.importorskip("submitit")

from hdee.execute.slurm import SlurmExecutor, rebuild_error  # noqa: E402

LOCAL = SlurmConfig(cluster="local", time_min=5, max_parallel=2)


@pytest.fixture
def job_path(monkeypatch):
    """submitit's job processes import the fake runners from here, and hdee from this checkout."""
    monkeypatch.setenv("PYTHONPATH", pythonpath(ROOT / "src"))


def layout_error_runner(spec_json: str, run_dir: str, progress=None) -> dict:
    raise LayoutError(f"{run_dir}/x: refused, it is not inside {run_dir}")


@pytest.mark.slow
def test_slurm_runs_a_dag_in_order_skips_it_and_fails_in_one_line(tmp_path, job_path, monkeypatch):
    from tests.unit.execute.test_execute import dag, fake_runner, runs

    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    with SlurmExecutor("rel", LOCAL, runner=fake_runner) as ex:  # relative: made absolute
        assert ex.run_dir == tmp_path / "rel"
        results = ex.run(dag())
        assert results == {"a": {"value": 0}, "b": {"value": 1}, "c": {"value": 1}, "d": {"value": 2}}
        assert (tmp_path / "rel/out/d.txt").read_text() == "d(b(a()),c(a()))"
        assert ex.run(dag()) == {} and all(runs(tmp_path / "rel", j) == 1 for j in "abcd")
        (tmp_path / "rel/out/b.txt").write_text("tampered")  # fails its checksum: b runs again
        assert set(ex.run(dag())) == {"b"}

    jobs = [Job(id="a", kind="train"), Job(id="boom", kind="train", deps=["a"]), Job(id="after", kind="train", deps=["boom"])]
    with SlurmExecutor(tmp_path / "f", LOCAL, runner=fake_runner) as ex:
        with pytest.raises(ExecutionError, match="^job boom failed: ValueError: the fake job failed on purpose$"):
            ex.run(jobs)
    assert runs(tmp_path / "f", "after") == 0
    with SlurmExecutor(tmp_path / "g", LOCAL, runner=layout_error_runner) as ex:
        with pytest.raises(LayoutError, match="^job a: .*/x: refused, it is not inside"):  # hdee's own error keeps its class
            ex.run([Job(id="a", kind="train")])
    assert time.monotonic() - t0 < 120


@pytest.mark.slow
def test_every_slurm_job_checks_its_node_first(tmp_path, job_path):
    from tests.unit.execute.test_execute import fake_runner, runs

    with SlurmExecutor(tmp_path, LOCAL, runner=fake_runner) as ex:
        ex._admit([Job(id="a", kind="train")])
        ex._expect["version"] = "0.0.1"  # as if this driver ran another hdee than the nodes
        with pytest.raises(ExecutionError, match=f"^job a: node .* runs hdee {hdee.__version__}, this driver hdee 0.0.1"):
            ex.run([Job(id="a", kind="train")])
    assert runs(tmp_path, "a") == 0  # refused before the job's work


def test_slurm_refusals_are_one_line(tmp_path, monkeypatch):
    from hdee.execute import devices

    with pytest.raises(ExecutionError, match="^gpus_per_job 0.5: Slurm gives whole GPUs"):
        SlurmExecutor(tmp_path, LOCAL, gpus_per_job=0.5)
    monkeypatch.setattr(devices, "visible_gpus", lambda: [])
    ex = SlurmExecutor(tmp_path, LOCAL, gpus_per_job=1)
    t0 = time.monotonic()
    with pytest.raises(ExecutionError) as exc:
        ex.run([Job(id="prep", kind="prepare"), Job(id="t", kind="train", deps=["prep"])])
    assert str(exc.value).startswith("job t asks for 1 CPU and 1 GPU (execute.threads_per_worker, execute.gpus_per_job), "
                                      "more than any node of this machine has: 1 node with")
    assert time.monotonic() - t0 < 5 and not list((tmp_path / ".cluster/slurm").iterdir())  # nothing submitted
    assert oct((tmp_path / ".cluster/slurm").stat().st_mode & 0o777) == "0o700"


def test_errors_cross_back_as_words():
    assert type(rebuild_error({"hdee": "LayoutError", "type": "LayoutError", "message": "m"})) is LayoutError
    assert type(rebuild_error({"hdee": None, "type": "KeyError", "message": "k"})) is KeyError
    odd = rebuild_error({"hdee": None, "type": "CudaOutOfMemory", "message": "no room"})
    assert type(odd).__name__ == "CudaOutOfMemory" and str(odd) == "no room"


def test_a_request_sbatch_refuses_is_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from submitit.core.utils import FailedJobError

    class Refusing:
        def submit(self, task):  # what submitit does when sbatch exits non-zero
            stderr = "sbatch: error: Batch job submission failed: Requested node configuration is not available"
            print(stderr, file=sys.stderr)
            raise FailedJobError(stderr)

    ex = SlurmExecutor(tmp_path, SlurmConfig(cluster="slurm"), threads_per_worker=64, gpus_per_job=1)
    monkeypatch.setattr(ex, "_executor", lambda gpus: Refusing())
    with pytest.raises(ExecutionError) as exc:
        ex.run([Job(id="t", kind="train")])
    assert str(exc.value) == ("Slurm refused job t asking for 64 CPUs and 1 GPU: sbatch: error: Batch job submission failed: "
                              "Requested node configuration is not available")
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_hdee_run_on_slurm_retrains_a_dropped_expert_bit_for_bit(tiny_run, tmp_path, job_path):
    """The whole pipeline with `--backend slurm`: finished jobs are verified and skipped, the
    dropped expert trains in a submitit job, and the results equal the original run's."""
    import json
    import shutil

    from hdee.config import load_config
    from hdee.pipeline.experiment import run_experiment

    layout = tiny_run.copy(tmp_path / "run")
    plan = json.loads(layout.plan_json.read_text())
    dropped = next(j["id"] for j in plan["jobs"] if j["kind"] == "train")
    shutil.rmtree(layout.expert_dir(dropped))
    layout.done_record(dropped).unlink()
    cfg_path = tmp_path / "slurm.toml"
    cfg_path.write_text(tiny_run.config_path.read_text() + '\n[execute.slurm]\ncluster = "local"\ntime_min = 10\n')
    summary = run_experiment(load_config(cfg_path), layout, backend="slurm", view=False)
    assert summary["jobs_run"] == 1
    weights = "model.safetensors"
    assert (layout.expert_dir(dropped) / weights).read_bytes() == (tiny_run.layout.expert_dir(dropped) / weights).read_bytes()
    record = json.loads(layout.done_record(dropped).read_text())
    assert record["cost"]["gpus"] == 0 and record["cost"]["seconds"] > 0  # no GPU given, none counted
    ppl = lambda p: {k: v["ppl"] for k, v in json.loads(p.read_text())["ensembles"].items()}  # noqa: E731
    assert ppl(layout.results_json) == ppl(tiny_run.layout.results_json)
    assert list((layout.cluster_dir / "slurm").iterdir())  # submitit's job folder, inside the run
