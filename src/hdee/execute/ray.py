"""Ray backend: every job is one `ray.remote` task; Ray places it on a node with the CPUs/GPUs asked.

`address=None` starts a private local cluster, listening on 127.0.0.1 only; `"auto"` or
`"host:port"` joins an existing one (see the README for running one with token authentication).
The run directory must be on a filesystem every node sees under the same path. A task whose
worker dies (a lost node) is retried by Ray (`max_retries`); jobs are idempotent, so a retried
training job resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
from concurrent.futures import Future
from pathlib import Path

from hdee.errors import ExecutionError
from hdee.execute.base import Executor
from hdee.execute.ray_output import ray_output_aside
from hdee.execute.devices import ray_task_options
from hdee.execute.jobs import JobRunner, run_job
from hdee.plan import Job

_threads_set = False
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _run_on_ray_worker(runner, spec_json: str, run_dir: str, threads: int) -> dict:
    global _threads_set
    if not _threads_set:
        import torch
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()
        _threads_set = True
    return runner(spec_json, run_dir, None)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when a host:port address does not answer (ray.init would wait)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ExecutionError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _loopback_node():
    """While a private cluster starts: Ray's own switch for a loopback-only node (the default on
    macOS and Windows), so every Ray process binds 127.0.0.1 instead of all interfaces."""
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(_LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"  # read by the Ray processes this starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by this process (ray may be imported already)
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = old_env


class RayExecutor(Executor):
    def __init__(
        self,
        run_dir: str | Path,
        address: str | None = None,
        workers: int | None = None,
        threads_per_worker: int = 1,
        gpus_per_job: float = 0,
        max_retries: int = 3,
        runner: JobRunner = run_job,
    ):
        super().__init__(run_dir)
        self.runner = runner
        import ray

        self._ray = ray
        self._owns_cluster = False
        if not ray.is_initialized():
            if address and address != "auto":
                _check_reachable(address)
            kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:  # "local": a new private cluster, never one a `ray start` left on this machine
                kwargs.update(address="local", num_cpus=workers or os.cpu_count() or 1)
                self._owns_cluster = True
            try:
                with _loopback_node() if self._owns_cluster else contextlib.nullcontext(), ray_output_aside():
                    ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:  # e.g. no auth token
                where = address or "local"
                raise ExecutionError(f"cannot reach the Ray cluster at {where}: {str(exc).strip().splitlines()[0]}") from None
        self._task = ray.remote(max_retries=max_retries)(_run_on_ray_worker)
        self._threads = threads_per_worker
        self._gpus_per_job = gpus_per_job

    def _submit(self, job: Job) -> Future:
        task = self._task.options(**ray_task_options(job.kind, self._threads, self._gpus_per_job))
        return task.remote(self.runner, job.model_dump_json(), str(self.run_dir), self._threads).future()

    def _unwrap_error(self, exc: BaseException) -> BaseException:
        cause = getattr(exc, "cause", None)  # RayTaskError carries the task's exception
        return cause if isinstance(cause, BaseException) else exc

    def close(self, wait: bool = True) -> None:
        if self._owns_cluster and self._ray.is_initialized():
            with ray_output_aside():
                self._ray.shutdown()
