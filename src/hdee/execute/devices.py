"""Which GPU each job's process uses: local workers round-robin over the visible GPUs; Ray tasks ask for GPUs.

A process sees only its GPU (`CUDA_VISIBLE_DEVICES`), so inside it every job trains on `cuda`
as if it were alone on the machine.
"""

from __future__ import annotations

import os


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: `CUDA_VISIBLE_DEVICES` when set, else every GPU torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:  # CUDA stops at the first invalid entry ("-1" hides everything after it)
        gpus = []
        for entry in (g.strip() for g in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            gpus.append(entry)
        return gpus
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def local_workers(workers: int | None, gpus: list[str], workers_per_gpu: int, cpu_default: int) -> int:
    """How many local workers: as asked, else `workers_per_gpu` per visible GPU, else the CPU default."""
    if workers:
        return workers
    return len(gpus) * workers_per_gpu if gpus else cpu_default


def worker_gpu(index: int, gpus: list[str]) -> str | None:
    """The GPU of the `index`-th worker started: round-robin, so N workers per GPU fill every GPU evenly."""
    return gpus[index % len(gpus)] if gpus else None


def claim_gpu(counter, gpus: list[str]) -> None:
    """In a new worker: take the next GPU in turn (`counter`: a shared multiprocessing Value) and see only it."""
    if not gpus:
        return
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(index, gpus)


def ray_task_options(kind: str, threads: int, gpus_per_job: float) -> dict:
    """Ray resources of one job: its threads as CPUs and `gpus_per_job` GPUs (a fraction shares one); data preparation needs none."""
    return {"num_cpus": threads, "num_gpus": 0 if kind == "prepare" else gpus_per_job}
