"""Which GPU each job's process uses: local workers round-robin over the visible GPUs; Ray tasks ask for GPUs.

A process sees only its GPU (`CUDA_VISIBLE_DEVICES`), so inside it every job trains on `cuda`
as if it were alone on the machine. The executor also says how much of a GPU it gave the
process (`give`): a job's GPU-hours count that share, not the GPUs the machine has.
"""

from __future__ import annotations

import os

_given: float | None = None  # the GPUs (a share below 1) the executor gave this process


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


def gpu_share(index: int, gpus: list[str], workers: int) -> float:
    """The share of its GPU the `index`-th of `workers` round-robin workers has: 1 / the workers on that GPU."""
    if not gpus:
        return 0.0
    slot = index % len(gpus)
    sharing = workers // len(gpus) + (1 if slot < workers % len(gpus) else 0)
    return 1.0 / max(1, sharing)


def claim_gpu(counter, gpus: list[str], workers: int | None = None) -> None:
    """In a new worker: take the next GPU in turn (`counter`: a shared multiprocessing Value) and see only it."""
    if not gpus:
        give(0)
        return
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(index, gpus)
    give(gpu_share(index, gpus, workers or len(gpus)))


def give(gpus: float) -> None:
    """Record what this process was given (an executor calls it before running jobs here)."""
    global _given
    _given = float(gpus)


def job_gpus(kind: str) -> float:
    """The GPUs a job's cost counts: what the executor gave this process, none for data
    preparation or where the process has no CUDA device (it ran on the CPU). A process no
    executor set up (a direct call) counts one GPU when it has CUDA, the device the trainer uses."""
    if kind == "prepare":
        return 0.0
    import torch

    if not torch.cuda.is_available():
        return 0.0
    return 1.0 if _given is None else _given


def job_request(kind: str, threads: int, gpus_per_job: float) -> dict[str, float]:
    """What one job asks a cluster for: its threads as CPUs and `gpus_per_job` GPUs (a fraction
    shares one); data preparation needs no GPU."""
    return {"CPU": float(threads), "GPU": 0.0 if kind == "prepare" else float(gpus_per_job)}


def ray_task_options(kind: str, threads: int, gpus_per_job: float) -> dict:
    """Ray resources of one job (`job_request` in Ray's words)."""
    req = job_request(kind, threads, gpus_per_job)
    return {"num_cpus": threads, "num_gpus": 0 if req["GPU"] == 0 else gpus_per_job}
