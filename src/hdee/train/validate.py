"""Validation: the job's validation windows and their mean next-token loss (data-parallel aware)."""

from __future__ import annotations

import numpy as np
import torch

from hdee.data.loaders import eval_windows
from hdee.train.device import DistContext, autocast, to_device
from hdee.train.domains import open_domain
from hdee.train.job import TrainJob


def val_windows(job: TrainJob) -> tuple[np.ndarray, list[str]]:
    """Windows of every validation domain (an equal share of `train.eval_tokens` each) and the domains' names."""
    if not job.val:
        return np.zeros((0, job.size.seq_len + 1), dtype=np.int64), []
    per_domain = max(job.size.seq_len, job.train.eval_tokens // len(job.val))
    chunks, names = [], []
    for d in job.val:
        data = open_domain(d, "val", job.size.vocab, job.tokenizer_hash)
        chunks.append(eval_windows(data.tokens, job.size.seq_len, per_domain))
        names.append(data.name)
    return np.concatenate(chunks), names


@torch.no_grad()
def validate(loss_model: torch.nn.Module, windows: np.ndarray, batch: int, ctx: DistContext) -> float | None:
    """Mean loss per predicted token over `windows`, each rank scoring its share; None without windows."""
    if len(windows) == 0:
        return None
    was_training = loss_model.training
    loss_model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    mine = windows[ctx.rank :: ctx.world_size]
    for i in range(0, len(mine), batch):
        x = to_device(mine[i : i + batch], ctx)
        with autocast(ctx):
            loss = loss_model(x)
        total[0] += loss.double() * x[:, 1:].numel()
        total[1] += x[:, 1:].numel()
    total = ctx.sum(total)
    loss_model.train(was_training)
    return float(total[0] / total[1])
