"""Run a plan's jobs: `local` worker processes, a `ray` cluster or `slurm` (submitit), behind one interface."""

from __future__ import annotations

from pathlib import Path

from hdee.config import ExperimentConfig
from hdee.core.errors import ExecutionError
from hdee.execute.base import Event, Executor


def make_executor(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    backend: str | None = None,
    address: str | None = None,
    workers: int | None = None,
) -> Executor:
    """The executor the arguments (else `cfg.execute`) ask for."""
    ex = cfg.execute
    backend = backend or ex.backend
    workers = workers or ex.workers
    if backend == "local":
        from hdee.execute.local import LocalExecutor

        return LocalExecutor(
            run_dir, workers=workers, threads_per_worker=ex.threads_per_worker, workers_per_gpu=ex.workers_per_gpu
        )
    if backend == "ray":
        from hdee.execute.ray import RayExecutor

        return RayExecutor(
            run_dir,
            address=address or ex.ray_address,
            workers=workers,
            threads_per_worker=ex.threads_per_worker,
            gpus_per_job=ex.gpus_per_job,
        )
    if backend == "slurm":
        from hdee.execute.slurm import SlurmExecutor

        return SlurmExecutor(run_dir, ex.slurm, threads_per_worker=ex.threads_per_worker, gpus_per_job=ex.gpus_per_job)
    raise ExecutionError(f"unknown backend {backend!r} (use local, ray or slurm)")


__all__ = ["Event", "Executor", "make_executor"]
