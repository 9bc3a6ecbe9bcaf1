"""A private Ray cluster's processes die with its driver, SIGKILL included; SIGTERM of a Ray driver
is one line, not Ray's stack dump."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hdee.execute import ray_reaper
from tests.helpers.paths import pythonpath

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the reaper reads /proc")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _name(pid: int) -> str:
    """The whole command line: an agent is `ray::DashboardAgent` once setproctitle took, and
    `python -u .../dashboard/agent.py` before."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _is_agent(name: str) -> bool:
    """An agent's own process; the raylet's command line names the agents' commands too."""
    program = name.split(" ", 1)[0]
    return "agent" in name.lower() and not program.endswith(("raylet", "gcs_server"))


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# a driver that starts one marked and one unmarked grandchild in their own sessions (as Ray's
# agents are: not in the driver's process group); the marked one starts a child of its own without
# the mark (as a retitled agent may look). It prints the pids and waits to be killed.
DRIVER = """
import os, subprocess, sys, time
from hdee.execute import ray_reaper
token, reaper = ray_reaper.start()
env = dict(os.environ, **{ray_reaper.MARK: token})
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
parent = [sys.executable, "-c", "import os, subprocess, sys, time; "
          "env = {k: v for k, v in os.environ.items() if k != %r}; "
          "c = subprocess.Popen(%r, env=env, start_new_session=True); print(c.pid, flush=True); time.sleep(600)"
          % (ray_reaper.MARK, sleeper)]
marked = subprocess.Popen(parent, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)
child = int(marked.stdout.readline())
other = subprocess.Popen(sleeper, start_new_session=True)
print(marked.pid, child, other.pid, reaper.pid, flush=True)
time.sleep(600)
"""


def test_the_reaper_kills_what_the_sigkilled_driver_marked_and_nothing_else():
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=pythonpath()))
    marked, child, other, reaper = map(int, driver.stdout.readline().split())
    try:
        assert ray_reaper.marked("no-such-token") == []
        time.sleep(1.0)  # the reaper has seen the family
        driver.kill()
        driver.wait()
        assert _gone_within([marked, child, reaper], 10), "a marked process or its child outlived the driver"
        assert _alive(other)  # an unmarked process is left alone
    finally:
        for pid in (marked, child, other, reaper):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_a_driver_that_closes_its_cluster_stops_the_reaper():
    _token, reaper = ray_reaper.start()
    assert reaper is not None and reaper.poll() is None
    ray_reaper.stop(reaper)
    assert reaper.returncode is not None


PRIVATE = """
import sys, time
from hdee.execute.ray import RayExecutor
ex = RayExecutor(sys.argv[1], workers=1)
print(ex._reaper.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_no_process_of_a_private_cluster_outlives_a_sigkilled_driver(tmp_path):
    pytest.importorskip("ray")
    driver = subprocess.Popen([sys.executable, "-c", PRIVATE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=pythonpath()), cwd=tmp_path)
    reaper = int(driver.stdout.readline())
    token = Path(f"/proc/{reaper}/cmdline").read_bytes().split(b"\0")[-2].decode()
    deadline = time.monotonic() + 60
    while True:  # the raylet starts its agents a while after ray.init returns (minutes under load)
        started = list(ray_reaper.family(token))
        names = {_name(p) for p in started}
        if any(_is_agent(n) for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    try:
        assert any(n.split(" ", 1)[0].endswith("raylet") for n in names), names  # the cluster carries the mark
        assert any(_is_agent(n) for n in names), names  # and the agents, retitled, are found as its descendants
        driver.kill()
        driver.wait()
        # Ray alone leaves its dashboard and runtime-env agents for about 60 s; whatever carries the
        # mark or descends from what does, started before the kill or after it, is gone within seconds
        assert _gone_within(started, 15), sorted(_name(p) for p in started if _alive(p))
        left = ray_reaper.marked(token)
        assert not left, sorted(_name(p) for p in left)
    finally:
        for pid in started + [reaper]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
