"""The executor interface: run a plan's jobs in dependency order, skipping finished ones.

Backends only say how one job is started (`_submit` returns a `concurrent.futures.Future`);
the loop here submits every job whose dependencies have finished and reports events.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from hdee.core.errors import ExecutionError, HdeeError
from hdee.execute.jobs import is_done
from hdee.plan.schema import Job

EventKind = Literal["skipped", "started", "progress", "finished", "failed"]


@dataclass
class Event:
    kind: EventKind
    job_id: str
    step: int | None = None
    steps: int | None = None
    error: str | None = None
    time: float = field(default_factory=time.time)


OnEvent = Callable[[Event], None]


class Executor:
    """Runs jobs through `hdee.execute.jobs.run_job`; subclasses start one job in `_submit`."""

    #: how many jobs may be submitted at once (None: as many as are ready)
    capacity: int | None = None

    def __init__(self, run_dir: str | Path):
        # absolute before anything is submitted: a remote worker starts in a directory of its own
        self.run_dir = Path(os.path.abspath(run_dir))

    def _submit(self, job: Job) -> Future:
        raise NotImplementedError

    def _admit(self, jobs: list[Job]) -> None:
        """Refuse, before the first submission, jobs the backend could never place (one line)."""

    def _poll(self, on_event: OnEvent) -> None:
        """Forward events the backend collected since the last call (progress reports)."""

    def close(self, wait: bool = True) -> None:
        """Release workers or the cluster connection (without waiting for running jobs if not `wait`)."""

    def _unwrap_error(self, exc: BaseException) -> BaseException:
        """The job's own exception, when the backend wrapped it."""
        return exc

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(wait=exc_type is None)

    def run(self, jobs: list[Job], on_event: OnEvent | None = None) -> dict[str, dict]:
        """Run `jobs` (topological order); deps outside the list count as finished.

        Returns {job id: result} for the jobs that ran. On the first failure no new job is
        started, running ones finish, and the error is raised with the job's id.
        """
        emit = on_event or (lambda ev: None)
        ids = {j.id for j in jobs}
        finished: set[str] = set()
        waiting: list[Job] = []
        for job in jobs:
            if is_done(job, self.run_dir):
                finished.add(job.id)
                emit(Event("skipped", job.id))
            else:
                waiting.append(job)
        if waiting:
            self._admit(waiting)
        running: dict[Future, Job] = {}
        results: dict[str, dict] = {}
        failure: tuple[Job, BaseException] | None = None
        try:
            while waiting or running:
                if failure is None:
                    for job in list(waiting):
                        if self.capacity is not None and len(running) >= self.capacity:
                            break
                        if all(d in finished or d not in ids for d in job.deps):
                            waiting.remove(job)
                            running[self._submit(job)] = job
                            emit(Event("started", job.id, 0, job.steps))
                elif not running:
                    break
                if not running:
                    missing = sorted({d for j in waiting for d in j.deps if d in ids and d not in finished})
                    raise ExecutionError(f"jobs wait on {missing[0]}, which never runs (dependency cycle?)")
                done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
                self._poll(emit)
                for fut in done:
                    job = running.pop(fut)
                    try:
                        results[job.id] = fut.result() or {}
                    except BaseException as exc:  # noqa: BLE001 - reported with the job id below
                        emit(Event("failed", job.id, error=_first_line(self._unwrap_error(exc))))
                        failure = failure or (job, exc)
                        continue
                    finished.add(job.id)
                    emit(Event("finished", job.id, job.steps, job.steps))
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
        if failure is not None:
            job, exc = failure
            exc = self._unwrap_error(exc)
            if isinstance(exc, HdeeError):
                raise type(exc)(f"job {job.id}: {_first_line(exc)}") from exc
            raise ExecutionError(f"job {job.id} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
