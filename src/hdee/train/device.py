"""Where a training process runs and how it feeds its device.

CPU: fp32, a plain (for-loop) AdamW, batches used in place: the reference numerics, bit for bit.
CUDA: bf16 autocast, fused AdamW, one pinned non-blocking copy of a rank's batch per step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from hdee.core.errors import TrainingError


@dataclass
class DistContext:
    """Where this process sits in a data-parallel group (world_size 1 = no group)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= self.world_size
        return value

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
        return value


def default_context() -> DistContext:
    return DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def rank_device(local_rank: int, local_world_size: int, gpus: int) -> torch.device:
    """The device of one data-parallel rank: `cuda:<local rank>`, or the CPU when no GPU is visible.

    More ranks on a node than visible GPUs would put two ranks on one GPU (NCCL refuses that), so
    it is refused; hiding the GPUs (`CUDA_VISIBLE_DEVICES=`) trains on the CPU with gloo instead.
    """
    if gpus == 0:
        return torch.device("cpu")
    if local_world_size > gpus:
        raise TrainingError(
            f"{local_world_size} ranks on this node but {gpus} GPU{'s' if gpus > 1 else ''} visible; "
            f"start at most {gpus} (torchrun --nproc-per-node {gpus}) or hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on CPU"
        )
    return torch.device("cuda", local_rank)


def autocast(ctx: DistContext) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; fp32 on CPU, always (CPU bf16 is slow and changes the numbers)."""
    if ctx.is_cuda:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def amp_dtype(ctx: DistContext) -> torch.dtype | None:
    """The dtype `autocast(ctx)` computes matmuls in, or None when it does not cast."""
    return torch.bfloat16 if ctx.is_cuda else None


def make_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], weight_decay: float, ctx: DistContext
) -> torch.optim.AdamW:
    """AdamW over fp32 master weights: fused kernels on CUDA, the reference for-loop on CPU."""
    kind = {"fused": True} if ctx.is_cuda else {"foreach": False}
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **kind)


def to_device(batch: np.ndarray, ctx: DistContext) -> torch.Tensor:
    """One rank's token windows on its device; on CUDA through pinned memory, without a host sync."""
    tensor = torch.from_numpy(np.ascontiguousarray(batch))
    if not ctx.is_cuda:
        return tensor
    return tensor.pin_memory().to(ctx.device, non_blocking=True)
