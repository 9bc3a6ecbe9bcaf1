"""The Ray backend: unreachable clusters fail in one line; a real local cluster runs a DAG."""

from __future__ import annotations

import json
import os
import socket

import pytest

from hdee.core.errors import ExecutionError
from hdee.execute.ray import RayExecutor
from tests.helpers.paths import CONFIGS, ROOT, pythonpath

pytest.importorskip("ray")  # an optional install (e.g. a GPU box installed without dependencies) may lack it


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_one_line(tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # "auto" reads <ray temp dir>/ray_current_cluster: a private temp dir, so a cluster someone else on
    # this machine started (or left behind when killed) is not found
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray-tmp"))

    assert not ray.is_initialized()
    addr = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ExecutionError, match=f"cannot reach the Ray cluster at {addr}") as exc:
        RayExecutor(tmp_path, address=addr)
    assert "\n" not in str(exc.value)
    with pytest.raises(ExecutionError, match="cannot reach the Ray cluster at auto") as exc:
        RayExecutor(tmp_path, address="auto")  # no cluster runs on this machine
    assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_ray_runs_a_dag_in_order(tmp_path):
    from tests.unit.execute.test_execute import dag, fake_runner, runs

    import ray

    # Ray workers import the fake runner by its module name, tests.unit.execute.test_execute
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath(ROOT / "src")}})
    try:
        with RayExecutor(tmp_path, runner=fake_runner) as ex:
            results = ex.run(dag())
            assert results["d"] == {"value": 2}
            assert (tmp_path / "out/d.txt").read_text() == "d(b(a()),c(a()))"
            assert ex.run(dag()) == {}
            assert all(runs(tmp_path, j) == 1 for j in "abcd")
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_same_numbers_and_weights_as_local(tmp_path):
    """A tiny plan on a real local Ray cluster equals the local executor's run, bit for bit."""
    import ray

    from hdee.config import load_config
    from hdee.core.fsutil import sha256_file
    from hdee.core.layout import RunLayout
    from hdee.pipeline.experiment import run_experiment

    text = (CONFIGS / "tiny.toml").read_text()
    text = text.replace('strategies = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense"]', 'strategies = ["MHo-IHo", "MHe-IHo"]')
    (tmp_path / "small.toml").write_text(text)
    cfg = load_config(tmp_path / "small.toml")
    assert cfg.strategies == ["MHo-IHo", "MHe-IHo"]

    local = RunLayout(tmp_path / "local")
    run_experiment(cfg, local, backend="local", workers=2, view=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = RunLayout(tmp_path / "ray")
        run_experiment(cfg, remote, backend="ray", view=False)
    finally:
        ray.shutdown()

    def numbers(layout):
        r = json.loads(layout.results_json.read_text())
        return {"experts": {k: v["ppl"] for k, v in r["experts"].items()}, "ensembles": {k: v["ppl"] for k, v in r["ensembles"].items()}}

    assert numbers(remote) == numbers(local)
    weights = sorted(local.experts_dir.glob("*/model.safetensors"))
    assert len(weights) == len(list(remote.experts_dir.glob("*/model.safetensors"))) > 0
    for w in weights:
        assert sha256_file(w) == sha256_file(remote.experts_dir / w.parent.name / w.name), w.parent.name


def test_ray_output_goes_aside_unless_asked_for(capfd, monkeypatch):
    from hdee.execute.ray_output import ray_log_path, ray_output_aside

    monkeypatch.delenv("HDEE_RAY_LOGS", raising=False)
    with ray_output_aside() as path:
        os.write(2, b"(raylet) a state dump line\n")
    assert path == ray_log_path() and "a state dump line" in path.read_text()
    assert "state dump" not in capfd.readouterr().err
    monkeypatch.setenv("HDEE_RAY_LOGS", "1")
    with ray_output_aside() as path:
        os.write(2, b"(raylet) asked for\n")
    assert path is None and "asked for" in capfd.readouterr().err


@pytest.mark.slow
def test_a_private_cluster_starts_and_stops_without_a_word(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("HDEE_RAY_LOGS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ex = RayExecutor(tmp_path, workers=1)  # a new private cluster even when another runs on this machine
    ex.close()
    assert capfd.readouterr().err == ""
