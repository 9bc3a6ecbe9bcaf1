"""A private Ray cluster does not outlive its driver, even one killed with SIGKILL.

Ray stops its GCS and raylet when the driver that started them dies, but its dashboard and
runtime-env agents first try to tell the (dead) GCS why, with a fixed 60 s timeout, and only then
exit. hdee marks every process of a cluster it starts with an environment variable, and a small
reaper in its own session keeps a list of the marked processes and their descendants while the
cluster lives, and kills them once the driver dies. Descendants matter: the agents retitle
themselves (setproctitle), which can overwrite the environment that /proc shows, and by the time
the driver is gone their parent, the raylet, may be gone too. Linux only (it reads /proc);
elsewhere the agents exit on Ray's own timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK = "HDEE_PRIVATE_RAY"
POLL_SECONDS = 0.5


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), None once it is gone."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def family(token: str) -> dict[int, str]:
    """The processes marked with `token` and all their descendants: pid -> start time."""
    pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    children: dict[int, list[int]] = {}
    for pid in pids:
        children.setdefault(_parent(pid) or 0, []).append(pid)
    out: dict[int, str] = {}
    todo = marked(token)
    while todo:
        pid = todo.pop()
        if pid in out or pid == os.getpid():
            continue
        born = _start_time(pid)
        if born is not None:
            out[pid] = born
            todo.extend(children.get(pid, []))
    return out


def marked(token: str) -> list[int]:
    """Pids of the processes started with MARK=token in their environment (this one excluded)."""
    needle, pids = b"\0" + f"{MARK}={token}".encode() + b"\0", []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in b"\0" + (entry / "environ").read_bytes() + b"\0":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def start(driver_pid: int | None = None) -> tuple[str, subprocess.Popen | None]:
    """A new token (put MARK=token into the environment of what is then started) and its reaper."""
    token = uuid.uuid4().hex
    if not Path("/proc/self/environ").exists():
        return token, None
    env = {k: v for k, v in os.environ.items() if k != MARK}
    proc = subprocess.Popen([sys.executable, "-m", "hdee.execute.ray_reaper", str(driver_pid or os.getpid()), token],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return token, proc


def stop(proc: subprocess.Popen | None) -> None:
    """The driver is closing its cluster itself: the reaper is not needed."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def reap(driver_pid: int, token: str) -> None:
    """Wait until `driver_pid` is gone, then SIGKILL every process marked with `token` and every
    descendant of one seen while the driver lived (a pid counts only with its recorded start time)."""
    born, seen = _start_time(driver_pid), {}
    while born is not None and _start_time(driver_pid) == born:
        seen.update(family(token))
        time.sleep(POLL_SECONDS)
    for _ in range(3):  # a process may start while the others die
        seen.update(family(token))
        for pid, started in seen.items():
            if _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    reap(int(sys.argv[1]), sys.argv[2])
