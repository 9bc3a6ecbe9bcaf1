"""Slurm backend through submitit: every job is one Slurm job running `hdee.execute.jobs.run_job`.

The contract is the executor's: jobs in dependency order, finished ones skipped after their
checksums are verified, at most `execute.slurm.max_parallel` queued at once, and every failure
one line naming the job. Each job first runs the preflight probe on its node (same run
directory, hdee version and config as the driver), then its work; a job Slurm stops at its time
limit or preempts is requeued by submitit and resumes from its last checkpoint.
`execute.slurm.cluster = "local"` runs the same jobs as processes on this machine (submitit's
LocalExecutor), which is how the tests run it.

submitit hands the call and its result over as pickles in its job folder, which hdee keeps
inside the run directory (`.cluster/slurm`, mode 0700) and fills with strings only: the job's
JSON, the run directory, the expected versions.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import socket
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from hdee.config import SlurmConfig
from hdee.core.errors import ExecutionError, HdeeError
from hdee.execute import devices, preflight
from hdee.execute.base import Executor, OnEvent
from hdee.execute.jobs import JobRunner, run_job
from hdee.execute.resources import check_requests, describe
from hdee.core.layout import RunLayout
from hdee.plan import Job

try:  # an optional extra: hdee[slurm]
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - reported when the backend is asked for
    submitit = None
    Checkpointable = object


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def rebuild_error(err: dict[str, Any]) -> Exception:
    """The exception a job reported in words, under its own class name (so the run's one line
    reads as with the other backends)."""
    from hdee.core import errors

    message = str(err.get("message", ""))
    cls = getattr(errors, str(err.get("hdee")), None) if err.get("hdee") else None
    if isinstance(cls, type) and issubclass(cls, HdeeError):
        return cls(message)
    name = str(err.get("type") or "Error")
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except TypeError:  # a built-in that wants other arguments
            pass
    return type(name, (RuntimeError,), {})(message)


class SlurmTask(Checkpointable):
    """One job as submitit runs it; requeued as it is (jobs resume from their checkpoints)."""

    def __init__(self, runner: JobRunner, spec_json: str, run_dir: str, threads: int, gpus: float, expect: dict):
        self.runner, self.spec_json, self.run_dir = runner, spec_json, run_dir
        self.threads, self.gpus, self.expect = threads, gpus, expect

    def __call__(self) -> dict[str, Any]:
        """The job's result, or {"error": ...}: an error crosses back as words, never as a pickled exception."""
        try:
            node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
            preflight.check_node(preflight.probe(self.expect, node), self.expect)
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before torch is imported
                os.environ[var] = str(self.threads)
            devices.give(self.gpus)
            return {"result": self.runner(self.spec_json, self.run_dir, None)}
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line in the driver
            kind = type(exc).__name__ if isinstance(exc, HdeeError) else None
            return {"error": {"hdee": kind, "type": type(exc).__name__, "message": _first_line(str(exc) or type(exc).__name__)}}


class SlurmExecutor(Executor):
    def __init__(
        self,
        run_dir: str | Path,
        settings: SlurmConfig | None = None,
        threads_per_worker: int = 1,
        gpus_per_job: float = 0,
        runner: JobRunner = run_job,
    ):
        super().__init__(run_dir)
        if submitit is None:
            raise ExecutionError("--backend slurm needs submitit: pip install 'hdee[slurm]'")
        self.settings = settings or SlurmConfig()
        if 0 < gpus_per_job < 1:
            raise ExecutionError(f"gpus_per_job {gpus_per_job:g}: Slurm gives whole GPUs; use 0 or 1 with --backend slurm")
        self.runner, self.threads, self.gpus_per_job = runner, threads_per_worker, gpus_per_job
        self.capacity = self.settings.max_parallel
        folder = RunLayout(self.run_dir).cluster_dir / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)  # submitit's pickles: nobody else may write them
        self._folder = folder
        self._executors: dict[float, Any] = {}
        self._pending: dict[Future, tuple[Job, Any]] = {}
        self._expect: preflight.Expectation | None = None

    def _executor(self, gpus: float):
        """One submitit executor per GPU count (data preparation asks for none)."""
        if gpus not in self._executors:
            s = self.settings
            ex = submitit.AutoExecutor(folder=self._folder / "%j", cluster=s.cluster)
            params: dict[str, Any] = {"timeout_min": s.time_min, "gpus_per_node": int(gpus), "name": "hdee"}
            if s.cluster == "slurm":
                params.update(cpus_per_task=self.threads, slurm_array_parallelism=s.max_parallel,
                              slurm_additional_parameters=dict(s.extra))
                if s.partition:
                    params["slurm_partition"] = s.partition
                if s.account:
                    params["slurm_account"] = s.account
                if s.mem_gb:
                    params["mem_gb"] = s.mem_gb
            ex.update_parameters(**params)
            self._executors[gpus] = ex
        return self._executors[gpus]

    def _request(self, job: Job) -> dict[str, float]:
        return devices.job_request(job.kind, self.threads, self.gpus_per_job)

    def _admit(self, jobs: list[Job]) -> None:
        if self.settings.cluster == "local":  # this machine is the cluster; Slurm's sbatch refuses its own
            here = {"CPU": float(os.cpu_count() or 1), "GPU": float(len(devices.visible_gpus()))}
            check_requests({j.id: self._request(j) for j in jobs}, [here], "this machine")
        if self._expect is None:
            self._expect = preflight.Expectation.write(self.run_dir)

    def _submit(self, job: Job) -> Future:
        assert self._expect is not None
        gpus = self._request(job)["GPU"]
        task = SlurmTask(self.runner, job.model_dump_json(), str(self.run_dir), self.threads, gpus, dict(self._expect))
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal there too
                sjob = self._executor(gpus).submit(task)
        except Exception as exc:  # noqa: BLE001 - sbatch's refusal (e.g. no such node) in one line
            raise ExecutionError(f"Slurm refused job {job.id} asking for {describe(self._request(job))}: "
                                 f"{_last_line(getattr(exc, 'stderr', None) or exc)}") from None
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        self._pending[fut] = (job, sjob)
        return fut

    def _poll(self, on_event: OnEvent) -> None:
        for fut, (job, sjob) in list(self._pending.items()):
            if not sjob.done():
                continue
            del self._pending[fut]
            try:
                out = sjob.result()
            except Exception as exc:  # noqa: BLE001 - killed, timed out for good, or lost by Slurm
                fut.set_exception(ExecutionError(f"Slurm job {sjob.job_id} ended without a result: {_last_line(str(exc))}"))
                continue
            if "error" in out:
                fut.set_exception(rebuild_error(out["error"]))
            else:
                fut.set_result(out.get("result") or {})

    def close(self, wait: bool = True) -> None:
        if not wait:  # an error or a signal: queued jobs are cancelled; running ones resume next time
            for _job, sjob in self._pending.values():
                try:
                    sjob.cancel(check=False)
                except Exception:  # noqa: BLE001 - best effort
                    pass
        self._pending.clear()
        if self._expect is not None:
            self._expect.clean()
