"""What a cluster run checks before its first job: absolute run directories, requests that some
node can meet, and nodes that see the run directory and run the driver's hdee on its config."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import pytest

import hdee
from hdee.core.errors import ExecutionError
from hdee.execute import preflight
from hdee.execute.base import Executor
from hdee.execute.resources import check_requests, describe_cluster
from hdee.plan import Job


class Recording(Executor):
    """Runs nothing: records the run directory each job would be handed."""

    def __init__(self, run_dir):
        super().__init__(run_dir)
        self.handed: list[str] = []

    def _submit(self, job):
        self.handed.append(str(self.run_dir))
        fut: Future = Future()
        fut.set_result({})
        return fut


def test_a_relative_run_directory_is_made_absolute_before_submission(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex = Recording("runs/rel")
    ex.run([Job(id="a", kind="train")])
    assert ex.handed == [str(tmp_path / "runs/rel")] and Path(ex.handed[0]).is_absolute()


def test_requests_no_node_meets_are_refused_in_one_line():
    nodes = [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}]
    check_requests({"a": {"CPU": 4.0, "GPU": 0.5}, "b": {"CPU": 1.0, "GPU": 0.0}}, nodes, "the Ray cluster at x:1")
    with pytest.raises(ExecutionError) as exc:
        check_requests({"p": {"CPU": 1.0, "GPU": 0.0}, "t": {"CPU": 1.0, "GPU": 0.5}}, [{"CPU": 2.0}, {"CPU": 2.0}], "the Ray cluster at x:1")
    assert str(exc.value) == (
        "job t asks for 1 CPU and 0.5 GPUs (execute.threads_per_worker, execute.gpus_per_job), more than any node of "
        "the Ray cluster at x:1 has: 2 nodes, 4 CPUs and 0 GPUs in all, at most 2 CPUs and 0 GPUs on one"
    )
    # 4 CPUs in all, but on no single node: a job runs on one node
    with pytest.raises(ExecutionError, match="job big asks for 3 CPUs and 0 GPUs"):
        check_requests({"big": {"CPU": 3.0, "GPU": 0.0}}, [{"CPU": 2.0}, {"CPU": 2.0}], "c")
    assert describe_cluster([]) == "no live node"


def _run_dir(tmp_path: Path, tiny) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny.model_dump(mode="json")))
    return run


def test_preflight_accepts_a_node_that_shares_the_run_directory(tmp_path, tiny):
    run = _run_dir(tmp_path, tiny)
    expect = preflight.Expectation.write(run)
    assert expect["config"] == tiny.fingerprint() and expect["version"] == hdee.__version__
    report = preflight.probe(expect, "127.0.0.3/abc")
    assert preflight.problem(report, expect) is None
    preflight.check_written_back([report], expect)
    expect.clean()
    assert not preflight.preflight_dir(run).exists()


def test_preflight_names_the_node_and_what_differs(tmp_path, tiny):
    run = _run_dir(tmp_path, tiny)
    expect = preflight.Expectation.write(run)
    ok = preflight.probe(expect, "n1")

    # a node whose disk has its own copy of the path: no token there
    elsewhere = dict(expect, run_dir=str(tmp_path / "node-local-copy"))
    with pytest.raises(ExecutionError) as exc:
        preflight.check_node(preflight.probe(elsewhere, "10.0.0.7/1a2b"), expect)
    assert str(exc.value).startswith(f"node 10.0.0.7/1a2b ({ok['host']}) does not see the run directory {run} (no token file")
    assert "storage every node shares under the same path" in str(exc.value)

    with pytest.raises(ExecutionError, match=r"node n2 \(.*\) runs hdee 0\.0\.1, this driver hdee " + hdee.__version__):
        preflight.check_node(dict(ok, node="n2", version="0.0.1"), expect)
    with pytest.raises(ExecutionError, match=r"node n3 \(.*\) reads .*config.json as 000000000000, this driver as "):
        preflight.check_node(dict(ok, node="n3", config="0" * 64), expect)

    # its answer landed on a disk the driver does not see
    with pytest.raises(ExecutionError, match="node ghost .* wrote its answer under .* but this driver does not see it"):
        preflight.check_written_back([ok, dict(ok, node="ghost")], expect)
    expect.clean()


def test_preflight_without_a_config_checks_the_directory_and_version_only(tmp_path):
    expect = preflight.Expectation.write(tmp_path)
    assert expect["config"] is None
    assert preflight.problem(preflight.probe(expect, "n"), expect) is None
    expect.clean()
