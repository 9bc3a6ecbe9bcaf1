"""The README's Ray cluster recipe, as written, on a two-node cluster on loopback (127.0.0.2 and
127.0.0.3, token authentication): a relative run directory run from another directory trains
real jobs on it; an impossible request, a wrong token and a node running another hdee each stop
the run in one line within seconds."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from tests.helpers.paths import ROOT, pythonpath
HEAD, NODE = "127.0.0.2", "127.0.0.3"
HDEE = [sys.executable, "-c", "from hdee.cli import main; main()"]


def _can_bind(host: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (_can_bind(HEAD) and _can_bind(NODE)),
                                                   reason="needs the loopback addresses 127.0.0.2 and 127.0.0.3")]


def recipe() -> list[str]:
    """The shell lines of the README's cluster recipe (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### A real Ray cluster, with token authentication"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, base: Path):
        self.base, self.port = base, _free_port(HEAD)
        self.address = f"{HEAD}:{self.port}"
        self.procs: list[subprocess.Popen] = []
        home = base / "home"
        home.mkdir()
        bin_dir = str(Path(sys.executable).parent)  # ray's own command, from this Python's environment
        self.env = dict(os.environ, HOME=str(home), PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]), RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS=self.address,
                        PYTHONPATH=pythonpath(ROOT / "src"))
        self.env.pop("RAY_AUTH_TOKEN", None)
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)

    def line(self, text: str) -> str:
        return (text.replace("HEAD_IP:6379", self.address).replace("--port 6379", f"--port {self.port}")
                .replace("HEAD_IP", HEAD).replace("NODE_IP", NODE))

    def start(self, line: str, name: str) -> None:
        """A `ray start` line of the recipe, with --block: it stays this test's child until stopped."""
        log = self.base / f"{name}.log"
        cmd = self.line(line) + " --block" + (f" --temp-dir {self.base / 'ray'}" if "--head" in line else "")
        proc = subprocess.Popen(cmd, shell=True, cwd=self.base, env=self.env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in reversed(self.procs):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            for proc in self.procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    lines = recipe()
    assert len(lines) == 4, lines
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    subprocess.run(lines[0], shell=True, check=True, cwd=c.base, env=c.env)  # the token
    try:
        c.start(lines[1], "head")
        c.start(lines[2], "node")
        c.run_line = lines[3]
        yield c
    finally:
        c.stop()


def _hdee(c: Cluster, line: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> tuple[int, str, float]:
    """The recipe's `hdee run` line: hdee from this checkout, the given config and run directory."""
    argv = shlex.split(line)
    assert argv[:3] == ["RAY_AUTH_MODE=token", "hdee", "run"], argv
    t0 = time.monotonic()
    proc = subprocess.run(HDEE + argv[2:], cwd=cwd, env=dict(env or c.env, RAY_AUTH_MODE="token"),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr, time.monotonic() - t0


def _prepared(tiny_run, where: Path, name: str, drop: int) -> tuple[str, list[str]]:
    """A copy of the finished tiny run at where/name, less `drop` domain-phase experts (which then
    train again); the recipe's line pointed at it, relative to `where`."""
    layout = tiny_run.copy(where / name)
    plan = json.loads(layout.plan_json.read_text())
    dropped = [j["id"] for j in plan["jobs"] if j["kind"] == "train"][:drop]
    for job_id in dropped:
        shutil.rmtree(layout.expert_dir(job_id))
        layout.done_record(job_id).unlink()
    return name, dropped


def test_the_readme_recipe_runs_a_relative_run_directory_on_two_nodes(cluster, tiny_run, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # not where `ray start` ran: the workers' directory
    elsewhere.mkdir()
    rel, dropped = _prepared(tiny_run, elsewhere, "rel", drop=2)
    line = cluster.run_line.replace("configs/paper-small-close.toml", str(tiny_run.config_path)).replace("/shared/runs/paper", rel)
    code, err, _ = _hdee(cluster, line + " --no-view", elsewhere)
    assert code == 0, err[-3000:]
    done = elsewhere / rel
    for job_id in dropped:  # retrained on the cluster, bit for bit
        ours, theirs = done / "experts" / job_id / "model.safetensors", tiny_run.layout.expert_dir(job_id) / "model.safetensors"
        assert ours.read_bytes() == theirs.read_bytes(), job_id
    ppl = lambda r: {k: v["ppl"] for k, v in r["ensembles"].items()}  # noqa: E731
    assert ppl(json.loads((done / "results/results.json").read_text())) == ppl(json.loads(tiny_run.layout.results_json.read_text()))
    assert not (done / ".cluster/preflight").exists()  # the probe's files are gone


def test_an_impossible_request_stops_in_one_line(cluster, tiny_run, tmp_path):
    rel, dropped = _prepared(tiny_run, tmp_path, "half", drop=1)
    cfg = tmp_path / "half.toml"
    cfg.write_text(tiny_run.config_path.read_text() + "\n[execute]\ngpus_per_job = 0.5\n")
    line = cluster.run_line.replace("configs/paper-small-close.toml", str(cfg)).replace("/shared/runs/paper", rel)
    code, err, seconds = _hdee(cluster, line + " --no-view", tmp_path, timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert lines[0] == (f"error: job {dropped[0]} asks for 1 CPU and 0.5 GPUs (execute.threads_per_worker, execute.gpus_per_job), "
                        "more than any node of the Ray cluster at auto has: 2 nodes, 4 CPUs and 0 GPUs in all, "
                        "at most 2 CPUs and 0 GPUs on one"), lines[0]
    assert seconds < 90  # the run used to wait for ever; most of this is starting Python under load


def test_a_wrong_token_is_named(cluster, tiny_run, tmp_path):
    line = cluster.run_line.replace("configs/paper-small-close.toml", str(tiny_run.config_path)).replace("/shared/runs/paper", "run")
    env = dict(cluster.env, RAY_AUTH_TOKEN="0" * 32)
    code, err, _ = _hdee(cluster, line, tmp_path, env=env, timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err[-3000:]  # nothing of Ray's retries on stderr either
    assert lines[0].startswith("error: authentication with the Ray cluster at auto failed: RPC error: InvalidAuthToken"), lines[0]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("jobs/*"))
    # how long the refusal takes once hdee is imported (ray.init alone retried for 20 s, then said "Failed to connect")
    script = ("import time; from hdee.core.errors import ExecutionError; from hdee.execute.ray import RayExecutor\n"
              "t = time.monotonic()\ntry:\n    RayExecutor('run', address='auto')\nexcept ExecutionError as e:\n"
              "    print(round(time.monotonic() - t, 1), e)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(env, RAY_AUTH_MODE="token"),
                         capture_output=True, text=True, timeout=120).stdout
    seconds, message = out.split(" ", 1)
    assert "authentication with the Ray cluster at auto failed" in message and float(seconds) < 10, out


def test_a_node_with_another_hdee_is_named(cluster, tiny_run, tmp_path):
    """The driver runs a copy of hdee with another version; the nodes run this checkout's."""
    import hdee

    other = tmp_path / "other-src"
    shutil.copytree(ROOT / "src", other, ignore=shutil.ignore_patterns("__pycache__"))
    init = other / "hdee/__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{hdee.__version__}"', '__version__ = "0.0.0+other"'))
    rel, _ = _prepared(tiny_run, tmp_path, "run", drop=1)
    line = cluster.run_line.replace("configs/paper-small-close.toml", str(tiny_run.config_path)).replace("/shared/runs/paper", rel)
    env = dict(cluster.env, PYTHONPATH=str(other))  # the driver only: workers inherit their raylet's
    code, err, _ = _hdee(cluster, line + " --no-view", tmp_path, env=env, timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert re.fullmatch(rf"error: node 127\.0\.0\.[23]/\w{{8}} \(.*\) runs hdee {re.escape(hdee.__version__)}, "
                        r"this driver hdee 0\.0\.0\+other; install the same hdee on every node", lines[0]), lines[0]


def test_sigterm_of_the_driver_is_one_line_and_the_rerun_finishes(cluster, tiny_run, tmp_path):
    """Ray's SIGTERM handler dumps a C++ stack and aborts; hdee's unwinds the run and says so once."""
    rel, dropped = _prepared(tiny_run, tmp_path, "run", drop=2)
    line = cluster.run_line.replace("configs/paper-small-close.toml", str(tiny_run.config_path)).replace("/shared/runs/paper", rel)
    argv = shlex.split(line + " --no-view")
    proc = subprocess.Popen(HDEE + argv[2:], cwd=tmp_path, env=dict(cluster.env, RAY_AUTH_MODE="token"),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / rel / "experts" / dropped[0]).exists():  # a job is running on the cluster
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 128 + signal.SIGTERM and lines == [
        "stopped: SIGTERM; finished outputs are kept, the same command resumes"], err[-3000:]
    code, err, _ = _hdee(cluster, line + " --no-view", tmp_path)
    assert code == 0, err[-3000:]
    for job_id in dropped:
        ours, theirs = tmp_path / rel / "experts" / job_id / "model.safetensors", tiny_run.layout.expert_dir(job_id) / "model.safetensors"
        assert ours.read_bytes() == theirs.read_bytes(), job_id
