"""Nothing lost, nothing escapes: safe names, paths kept inside the run, checksums checked on
every read, one writer per run directory, workers that die with their driver, a private Ray
cluster on loopback only, and atomic writes with the umask's permissions."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hdee.core.errors import DataError, LayoutError, LockError
from hdee.core.layout import RunLayout
from hdee.core.lock import run_dir_lock
from hdee.core.names import check_name
from tests.helpers.safety_helpers import alive, descendants, flip_byte, is_loopback, listening, lock_held

HDEE = str(Path(sys.executable).parent / "hdee")


# ------------------------------------------------------------------ names and paths


@pytest.mark.parametrize("name", ["py_code", "M", "seed-S-0a1b2c3d", "a.b", "9lives", "x" * 64])
def test_names_that_are_plain_path_components_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", [".", "..", ".hidden", "", "a/b", "../../x", "a\\b", "a b", "a\0b", "x" * 65, "/abs"])
def test_names_that_could_leave_their_directory_are_refused(name):
    with pytest.raises(ValueError, match="must be 1-64 letters, digits"):
        check_name(name)


def test_plan_jobs_refuse_names_that_are_not_plain():
    from pydantic import ValidationError

    from hdee.plan import Job

    Job(id="train-easy-i1-M-8-0a1b2c3d", kind="train", domains=["py_code"], size="M", lineage="easy")
    for bad in ({"id": "../x"}, {"domains": ["."]}, {"size": "../../x"}, {"lineage": ".."}, {"expert": "a/b"}):
        with pytest.raises(ValidationError, match="must be 1-"):
            Job(**{"id": "j", "kind": "train", **bad})


@pytest.mark.parametrize("call", [
    lambda l: l.domain_dir("."), lambda l: l.domain_dir(".."), lambda l: l.domain_dir("a/../../b"),
    lambda l: l.expert_dir("../../x"), lambda l: l.expert_dir("/etc"), lambda l: l.expert_dir(""),
    lambda l: l.score_path("e", "../d", "test"), lambda l: l.done_record("../config"),
])
def test_run_layout_refuses_paths_outside_its_directories(tmp_path, call):
    """The second line of defence: whatever a name holds, the layout never leaves its run directory."""
    with pytest.raises(LayoutError, match="refused, it is not inside"):
        call(RunLayout(tmp_path / "run"))


def test_run_layout_paths_inside(tmp_path):
    layout = RunLayout(tmp_path / "run")
    assert layout.domain_dir("py_code") == tmp_path / "run/data/domains/py_code"
    assert layout.score_path("e", "d", "test") == tmp_path / "run/scores/e/d.test.npy"


# ------------------------------------------------------------------ checksums of token shards


def test_a_flipped_shard_byte_is_refused_then_prepare_rebuilds_it(tiny_run, tmp_path):
    from hdee.data.prepare import prepare
    from hdee.data.shards import read_split
    from hdee.execute.jobs import is_done
    from hdee.plan import prepare_job

    layout = tiny_run.copy(tmp_path / "run")
    domain = layout.domain_dir("py_code")
    original = (domain / "train.bin").read_bytes()
    read_split(domain, "train")
    assert is_done(prepare_job(tiny_run.cfg), layout.root)
    flip_byte(domain / "train.bin")
    with pytest.raises(DataError, match=r"py_code/train\.bin: sha256 does not match manifest\.json"):
        read_split(domain, "train")
    assert not is_done(prepare_job(tiny_run.cfg), layout.root)  # so `hdee run` prepares again
    prepare(tiny_run.cfg, layout)
    assert (domain / "train.bin").read_bytes() == original
    assert len(read_split(domain, "train")) > 0 and is_done(prepare_job(tiny_run.cfg), layout.root)


# ------------------------------------------------------------------ permissions of atomic writes


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_atomic_writes_get_the_umask_permissions(tmp_path, umask, file_mode, dir_mode):
    from hdee.core.fsutil import atomic_dir, atomic_write_json

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "f.json", {"a": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode


# ------------------------------------------------------------------ one writer per run directory


def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    run = tmp_path / "run"
    with lock_held(run, "eval") as pid:
        with pytest.raises(LockError, match=f"in use by pid {pid} \\(hdee eval\\)") as err:
            with run_dir_lock(run, "run"):
                pass
        assert "\n" not in str(err.value)
    with run_dir_lock(run, "run"):  # the holder was killed (SIGKILL): the kernel dropped its lock
        with pytest.raises(LockError, match=f"pid {os.getpid()} \\(hdee run\\)"):
            with run_dir_lock(run, "report"):
                pass


# ------------------------------------------------------------------ processes


def _fresh_run(tiny_run, dest: Path) -> tuple[Path, Path]:
    """(config, run dir): the tiny run's prepared data, nothing trained, and seed models so long
    (10M tokens) that a worker would stay busy for minutes: `hdee run` starts training at once."""
    layout = tiny_run.copy(dest / "run")
    for sub in ("experts", "scores", "results"):
        shutil.rmtree(layout.root / sub)
    for rec in (*(layout.root / "jobs").iterdir(), layout.config_snapshot, layout.plan_json):
        if not rec.name.startswith("prepare-"):
            rec.unlink()
    text = tiny_run.config_path.read_text()
    assert "[seed_models]\ntokens = 4096\n" in text
    config = dest / "long.toml"
    config.write_text(text.replace("[seed_models]\ntokens = 4096\n", "[seed_models]\ntokens = 10_000_000\n"))
    return config, layout.root


def _start_run(config: Path, run: Path, tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """`hdee run` with two workers, returned once both are training a seed model."""
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([HDEE, "run", str(config), "--run-dir", str(run), "--no-view", "--workers", "2"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        workers = [p for p in descendants(driver.pid) if "spawn_main" in _cmdline(p)]
        if len(workers) == 2 and len(list((run / "experts").glob("seed-*"))) == 2:
            return driver, workers
        time.sleep(0.1)
    driver.kill()
    raise AssertionError(f"the workers did not start: {(tmp_path / 'driver.log').read_text()[-2000:]}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_dead(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def _reap(pids: list[int]) -> None:
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)


@pytest.mark.slow
def test_workers_die_when_the_driver_is_killed(tiny_run, tmp_path):
    config, run = _fresh_run(tiny_run, tmp_path)
    driver, workers = _start_run(config, run, tmp_path)
    everything = [driver.pid, *descendants(driver.pid)]
    try:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        survivors = _wait_dead(everything, 10.0)
        assert not survivors, [(p, _cmdline(p)) for p in survivors]
    finally:
        _reap(everything)
    assert workers


@pytest.mark.slow
def test_sigterm_stops_the_pool_and_frees_the_run_dir(tiny_run, tmp_path):
    config, run = _fresh_run(tiny_run, tmp_path)
    driver, workers = _start_run(config, run, tmp_path)
    everything = [driver.pid, *descendants(driver.pid)]
    try:
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=30) == 128 + signal.SIGTERM
        survivors = _wait_dead(everything, 10.0)
        assert not survivors, [(p, _cmdline(p)) for p in survivors]
    finally:
        _reap(everything)
    assert "Traceback" not in (tmp_path / "driver.log").read_text()
    with run_dir_lock(run, "run"):
        pass


@pytest.mark.slow
def test_a_private_ray_cluster_listens_on_loopback_only(tmp_path, monkeypatch):
    import ray

    from hdee.execute.ray import RayExecutor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    with RayExecutor(tmp_path, workers=1):
        assert ray.get(ray.remote(lambda: os.getpid()).remote()) != os.getpid()  # a worker process is up
        sockets = listening([os.getpid(), *descendants(os.getpid())])
        assert sockets, "found no listening socket of the cluster"
        exposed = [(pid, addr, port, _cmdline(pid)[:80]) for pid, addr, port in sockets if not is_loopback(addr)]
        assert not exposed
    assert not ray.is_initialized()


def test_a_cluster_that_refuses_the_driver_is_one_line(tmp_path, monkeypatch):
    """Joining a token-authenticated cluster without its token: Ray's AuthenticationError becomes one line."""
    import ray

    from hdee.core.errors import ExecutionError
    from hdee.execute.ray import RayExecutor

    def refuse(**kwargs):
        raise ray.exceptions.AuthenticationError("Token authentication is enabled but no authentication token was found")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ExecutionError, match="authentication with the Ray cluster at auto failed: Token authentication is enabled") as err:
        RayExecutor(tmp_path, address="auto")
    assert "\n" not in str(err.value)
