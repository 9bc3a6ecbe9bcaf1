"""The view of a run: jobs done/running/left, running jobs' steps, elapsed time, ETA.

On a terminal it is a live table. Off one (a pipe, a file, CI logs) it is plain lines: one per
stage, one per finished or failed job, and, while jobs only report steps, one at least every
`every` seconds; the last line sums up what ran and what was reused. A job reused at the start
of a stage is counted as reused only if this run did not itself finish it in an earlier stage.

The ETA divides the FLOPs still to train by the FLOP rate measured so far in this run, so it is
only shown once a training job has finished.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hdee.execute.base import Event
from hdee.plan import Job


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RunView:
    """Collects executor events; renders them live when `live` is true (a context manager)."""

    def __init__(self, console: Console | None = None, live: bool = True, title: str = "", every: float = 60.0):
        self.console = console or Console()
        self.title = title
        self.jobs: dict[str, Job] = {}
        self.state: dict[str, str] = {}
        self.step: dict[str, tuple[int, int]] = {}
        self.began: dict[str, float] = {}
        self.started = time.monotonic()
        self.flops_done = 0.0
        self.every = every
        self.lines = live and not self.console.is_terminal  # plain lines off a terminal
        self._last_line = self.started
        self._live = Live(console=self.console, refresh_per_second=4, transient=False) if live and not self.lines else None

    def add_jobs(self, jobs: list[Job], stage: str = "") -> None:
        for j in jobs:
            if j.id not in self.jobs:
                self.jobs[j.id] = j
                self.state[j.id] = "left"
        if stage:
            self.title = stage
            if self.lines:
                self._line(f"{stage}: {len(jobs)} jobs" if jobs else stage)
        self._refresh()

    def __call__(self, ev: Event) -> None:
        if ev.job_id not in self.jobs:
            return
        if ev.kind == "skipped":
            if self.state[ev.job_id] != "done":  # finished by this run in an earlier stage: not reused
                self.state[ev.job_id] = "skipped"
        elif ev.kind == "started":
            self.state[ev.job_id] = "running"
            self.began[ev.job_id] = time.monotonic()
        elif ev.kind == "progress":
            self.step[ev.job_id] = (ev.step or 0, ev.steps or 0)
            if self.lines and time.monotonic() - self._last_line >= self.every:
                self._line("running: " + ", ".join(f"{j} {s}/{n}" for j, (s, n) in self.step.items()
                                                    if self.state.get(j) == "running" and n))
        elif ev.kind == "finished":
            self.state[ev.job_id] = "done"
            self.flops_done += self.jobs[ev.job_id].flops
            if self.lines:
                self._line(f"finished {self._describe(ev.job_id)}")
        elif ev.kind == "failed":
            self.state[ev.job_id] = "failed"
            if self.lines:
                self._line(f"FAILED {self._describe(ev.job_id)}: {ev.error}")
        self._refresh()

    # ------------------------------------------------------------------ plain lines

    def _describe(self, job_id: str) -> str:
        job = self.jobs[job_id]
        took = time.monotonic() - self.began.get(job_id, time.monotonic())
        steps = f", {job.steps} steps" if job.steps else ""
        return f"{job_id} ({job.kind}{steps}, {took:.1f} s)"

    def status(self) -> str:
        """One line: how many jobs ran, were reused, run and are left, and the ETA."""
        c = self.counts()
        eta = self.eta_seconds()
        return (f"{c['done']} run, {c['skipped']} reused, {c['running']} running, {c['left']} left"
                + (f", {c['failed']} failed" if c["failed"] else "") + (f", ETA {_clock(eta)}" if eta is not None else ""))

    def _line(self, what: str) -> None:
        self._last_line = time.monotonic()
        self.console.print(f"[{_clock(self._last_line - self.started)}] {what} | {self.status()}",
                           highlight=False, markup=False)

    # ------------------------------------------------------------------ rendering

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "running": 0, "left": 0, "failed": 0}
        for s in self.state.values():
            out[s] += 1
        return out

    def eta_seconds(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.flops_done <= 0 or elapsed <= 0:
            return None
        left = 0.0
        for job_id, s in self.state.items():
            job = self.jobs[job_id]
            if s == "left":
                left += job.flops
            elif s == "running":
                step, steps = self.step.get(job_id, (0, job.steps or 0))
                left += job.flops * (1 - step / steps) if steps else job.flops
        return left / (self.flops_done / elapsed)

    def render(self) -> Group:
        c = self.counts()
        elapsed = time.monotonic() - self.started
        eta = self.eta_seconds()
        head = Text(
            f"{self.title}\njobs: {c['done']} run, {c['skipped']} reused, {c['running']} running, "
            f"{c['left']} left" + (f", {c['failed']} failed" if c["failed"] else "")
            + f"  elapsed {_clock(elapsed)}  ETA {_clock(eta) if eta is not None else '?'}"
        )
        if not c["running"]:
            return Group(head)
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("running job")
        table.add_column("kind")
        table.add_column("progress", justify="right")
        for job_id, s in self.state.items():
            if s != "running":
                continue
            step, steps = self.step.get(job_id, (0, self.jobs[job_id].steps or 0))
            table.add_row(job_id, self.jobs[job_id].kind, f"{step}/{steps}" if steps else "-")
        return Group(head, table)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def __enter__(self) -> "RunView":
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lines:
            c = self.counts()
            self.console.print(f"[{_clock(time.monotonic() - self.started)}] jobs: {c['done']} run, {c['skipped']} reused"
                               + (f", {c['failed']} failed" if c["failed"] else ""), highlight=False, markup=False)
        if self._live is not None:
            self._live.update(self.render())
            self._live.stop()
            if not self.console.is_terminal:  # the last render ends without a newline there
                self.console.print()
