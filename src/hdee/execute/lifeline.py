"""Worker processes never outlive the run that started them.

A worker asks the kernel to SIGKILL it when its parent dies (Linux `PR_SET_PDEATHSIG`) and
also watches its parent pid from a thread (every platform), so killing the driver, even with
SIGKILL, leaves no worker holding memory. A driver that gets SIGTERM unwinds like Ctrl-C:
the executor stops its workers, locks are released, temp files removed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

_PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 1.0


def _parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watchdog below still covers it


def _watch(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(WATCH_SECONDS)


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a worker process: it exits as soon as `parent_pid` is gone."""
    _parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="hdee-parent-watch", daemon=True).start()


class Terminated(SystemExit):
    """SIGTERM, as an exit that unwinds every `with` block (status 128 + SIGTERM)."""


def _raise_exit(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def exit_on_sigterm() -> None:
    """In the driver's main thread: SIGTERM raises SystemExit, so every `with` block unwinds."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_exit)


def pool_processes(pool: Any) -> list:
    """The worker processes of a `ProcessPoolExecutor` (take them before `shutdown` forgets them)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def stop_processes(procs: list, grace: float = 5.0) -> None:
    """Terminate, then kill after `grace` seconds, worker processes that are still running."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
