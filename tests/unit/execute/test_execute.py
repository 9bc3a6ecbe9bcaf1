"""Executors on fake jobs: dependency order, progress events, skipping verified work, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdee.core.errors import ExecutionError
from hdee.execute.base import Event, Executor
from hdee.execute.jobs import is_done, write_record
from hdee.core.layout import RunLayout
from hdee.execute.local import LocalExecutor
from hdee.execute.view import RunView
from hdee.plan import Job
from tests.helpers.paths import CONFIGS


def fake_runner(spec_json: str, run_dir: str, progress=None) -> dict:
    """A job that needs its deps' outputs, reports steps, and writes one output + its record."""
    job = Job.model_validate_json(spec_json)
    out = Path(run_dir) / "out"
    out.mkdir(exist_ok=True)
    parts = []
    for d in job.deps:
        parts.append((out / f"{d}.txt").read_text())  # FileNotFoundError if run before its dep
    if "boom" in job.id:
        raise ValueError("the fake job failed on purpose")
    for step in range(1, (job.steps or 0) + 1):
        if progress:
            progress(job.id, step, job.steps)
    path = out / f"{job.id}.txt"
    path.write_text(job.id + "(" + ",".join(parts) + ")")
    runs = out / f"{job.id}.runs"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    write_record(job, run_dir, {"value": len(parts)}, [path])
    return {"value": len(parts)}


def dag() -> list[Job]:
    return [
        Job(id="a", kind="train", steps=3),
        Job(id="b", kind="train", deps=["a"], steps=2),
        Job(id="c", kind="train", deps=["a"], steps=2),
        Job(id="d", kind="score", deps=["b", "c"]),
    ]


def runs(run_dir: Path, job_id: str) -> int:
    p = run_dir / "out" / f"{job_id}.runs"
    return len(p.read_text()) if p.exists() else 0


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("local")


@pytest.mark.slow  # starts worker processes, each importing torch
def test_local_executor_runs_a_dag_in_order_and_then_skips_it(pool_dir):
    events: list[Event] = []
    with LocalExecutor(pool_dir, workers=2, runner=fake_runner) as ex:
        results = ex.run(dag(), on_event=events.append)
        assert results == {"a": {"value": 0}, "b": {"value": 1}, "c": {"value": 1}, "d": {"value": 2}}
        assert (pool_dir / "out/d.txt").read_text() == "d(b(a()),c(a()))"
        kinds = {(e.kind, e.job_id) for e in events}
        assert {("started", j) for j in "abcd"} <= kinds and {("finished", j) for j in "abcd"} <= kinds
        assert [(e.step, e.steps) for e in events if e.kind == "progress" and e.job_id == "a"] == [(1, 3), (2, 3), (3, 3)]
        finished = [e.job_id for e in events if e.kind == "finished"]
        assert finished.index("a") < finished.index("b") < finished.index("d")

        again: list[Event] = []
        assert ex.run(dag(), on_event=again.append) == {}
        assert sorted(e.job_id for e in again if e.kind == "skipped") == ["a", "b", "c", "d"]
        assert all(runs(pool_dir, j) == 1 for j in "abcd")

        # a damaged output fails its checksum: that job runs again, the others are reused
        (pool_dir / "out/c.txt").write_text("tampered")
        assert not is_done(dag()[2], pool_dir)
        assert set(ex.run(dag())) == {"c"}
        assert runs(pool_dir, "c") == 2 and runs(pool_dir, "d") == 1


@pytest.mark.slow  # starts worker processes, each importing torch
def test_failure_names_the_job_and_stops_its_dependents(tmp_path):
    jobs = [Job(id="a", kind="train"), Job(id="boom", kind="train", deps=["a"]), Job(id="after", kind="train", deps=["boom"])]
    with LocalExecutor(tmp_path, workers=1, runner=fake_runner) as ex:
        with pytest.raises(ExecutionError, match="job boom failed: ValueError: the fake job failed on purpose") as exc:
            ex.run(jobs)
    assert "\n" not in str(exc.value)
    assert runs(tmp_path, "a") == 1 and runs(tmp_path, "after") == 0


def test_deps_outside_the_list_count_as_done(tmp_path):
    class Inline(Executor):
        def _submit(self, job):
            from concurrent.futures import Future

            fut: Future = Future()
            fut.set_result(fake_runner(job.model_dump_json(), str(self.run_dir)))
            return fut

    ex = Inline(tmp_path)
    ex.run([Job(id="a", kind="train")])
    assert set(ex.run([Job(id="b", kind="train", deps=["a"])])) == {"b"}


def test_record_lists_checksums(tmp_path):
    fake_runner(Job(id="a", kind="train").model_dump_json(), str(tmp_path))
    rec = json.loads(RunLayout(tmp_path).done_record("a").read_text())
    assert rec["id"] == "a" and list(rec["outputs"]) == ["out/a.txt"] and len(rec["outputs"]["out/a.txt"]) == 64
    RunLayout(tmp_path).done_record("a").write_text("{not json")
    assert not is_done(Job(id="a", kind="train"), tmp_path)


def test_view_counts_and_eta():
    view = RunView(live=False)
    view.add_jobs([Job(id="a", kind="train", steps=4, flops=100.0), Job(id="b", kind="train", steps=4, flops=300.0)])
    assert view.eta_seconds() is None
    view(Event("skipped", "x-unknown"))  # events of other stages are ignored
    view(Event("started", "a"))
    view(Event("progress", "a", 2, 4))
    assert view.counts()["running"] == 1
    view(Event("finished", "a"))
    view(Event("started", "b"))
    view(Event("progress", "b", 1, 4))
    c = view.counts()
    assert c["done"] == 1 and c["running"] == 1 and c["left"] == 0
    eta = view.eta_seconds()
    assert eta is not None and eta > 0
    text = "".join(seg.text for seg in view.console.render(view.render()))
    assert "1 run, 0 reused" in text and "1 running" in text and "1/4" in text


def test_off_a_terminal_the_view_prints_a_line_per_job_and_a_consistent_sum():
    import io

    from rich.console import Console

    buf = io.StringIO()
    view = RunView(console=Console(file=buf, width=10_000), live=True, every=0.0)
    assert view.lines and view._live is None
    jobs = [Job(id="a", kind="train", steps=4, flops=100.0), Job(id="b", kind="train", steps=4, flops=300.0),
            Job(id="c", kind="score")]
    with view:
        view.add_jobs(jobs[:2], "tiny stage 1")
        view(Event("skipped", "b"))  # finished by an earlier run: reused
        view(Event("started", "a"))
        view(Event("progress", "a", 2, 4))
        view(Event("finished", "a"))
        view.add_jobs(jobs, "tiny stage 2")
        view(Event("skipped", "a"))  # this run finished it in stage 1: still counted as run, not reused
        view(Event("skipped", "b"))
        view(Event("started", "c"))
        view(Event("failed", "c", error="boom"))
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[0:00:00] tiny stage 1: 2 jobs |")
    assert any("running: a 2/4" in ln for ln in lines)
    assert any("finished a (train, 4 steps," in ln and "| 1 run, 1 reused, 0 running, 0 left" in ln for ln in lines)
    assert any("FAILED c (score," in ln and ": boom |" in ln for ln in lines)
    assert lines[-1].endswith("jobs: 1 run, 1 reused, 1 failed")
    assert view.counts() == {"done": 1, "skipped": 1, "running": 0, "left": 0, "failed": 1}


def test_unknown_backend_is_one_line(tmp_path):
    from hdee.config import load_config
    from hdee.execute import make_executor

    cfg = load_config(CONFIGS / "tiny.toml")
    with pytest.raises(ExecutionError, match="unknown backend 'sge' \\(use local, ray or slurm\\)"):
        make_executor(cfg, tmp_path, backend="sge")
