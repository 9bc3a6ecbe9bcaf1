"""Data-parallel training of one expert: `torchrun --nproc-per-node N -m hdee.train.distributed JOB.json`.

Rank r of a node trains on `cuda:<local rank>` with nccl; more ranks than visible GPUs are refused,
and with no GPU visible (`CUDA_VISIBLE_DEVICES=`) every rank trains on the CPU with gloo. The
global batch in tokens is the job's whatever N is (each rank takes its slice and gradient
accumulation shrinks accordingly); only rank 0 writes files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hdee.core.errors import HdeeError
from hdee.train.device import DistContext, rank_device
from hdee.train.job import TrainJob
from hdee.train.loop import run_train_job


def load_job(path: str | Path) -> TrainJob:
    return TrainJob.model_validate_json(Path(path).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: torchrun --nproc-per-node N -m hdee.train.distributed JOB.json", file=sys.stderr)
        return 2
    try:
        job = load_job(argv[0])
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"error: {argv[0]}: not a readable training job ({first})", file=sys.stderr)
        return 2
    local, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    try:
        device = rank_device(local, local_world, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    except HdeeError as exc:
        if local == 0:  # one line for the whole launch
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        run_train_job(job, progress=rank == 0, dist=DistContext(rank=rank, world_size=world, device=device))
    except HdeeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
