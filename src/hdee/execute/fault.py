"""Fault injection for resume tests: `HDEE_FAULT=<kind>:<n>` SIGKILLs the whole run mid-way.

The n-th job of that kind started in this process group (counted in a file under the run
directory, so every worker process sees one count) kills its own process group: a training job
at the first progress report past half of its steps, any other job after its work is written
but before its done record is. `evaluate` is armed by the pipeline in the same way.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

ENV = "HDEE_FAULT"


class Trap:
    def __init__(self, armed: bool):
        self.armed = armed

    def _fire(self) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    def progress(self, step: int, steps: int) -> None:
        if self.armed and steps and step * 2 > steps:
            self._fire()

    def before_record(self) -> None:
        if self.armed:
            self._fire()


def _count(run_dir: Path, kind: str) -> int:
    d = run_dir / ".faults"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{os.getpgrp()}.{kind}"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = len(f.read()) + 1
        f.write("x")
        f.flush()
    return n


def arm(kind: str, run_dir: str | Path, steps: int | None = None) -> Trap:
    spec = os.environ.get(ENV, "")
    if not spec or ":" not in spec:
        return Trap(False)
    want_kind, _, nth = spec.partition(":")
    if want_kind != kind:
        return Trap(False)
    return Trap(_count(Path(run_dir), kind) == int(nth))
