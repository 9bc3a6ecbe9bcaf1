"""What one training job is: a typed, JSON-serialisable description, and its derived step plan."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hdee.config import ExperimentConfig, Schedule, TrainConfig
from hdee.core.errors import TrainingError
from hdee.model import SizeSpec, flops_per_token, size_spec
from hdee.train.memory import GIB, estimate_bytes, micro_tokens_for_budget


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataMix(_Strict):
    """One training domain (a prepared domain directory) and its weight in the mixture."""

    domain_dir: Path
    weight: float = Field(default=1.0, gt=0)


class Budget(_Strict):
    """Exactly one of steps, tokens or FLOPs (budget convention: 6 x non-embedding params)."""

    steps: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    flops: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Budget":
        if sum(x is not None for x in (self.steps, self.tokens, self.flops)) != 1:
            raise ValueError("budget needs exactly one of steps, tokens or flops")
        return self


class TrainJob(_Strict):
    out_dir: Path
    size: SizeSpec
    parent: Path | None = None
    data: list[DataMix] = Field(min_length=1)
    val: list[Path] = Field(default_factory=list)
    tokenizer_hash: str | None = None
    tokenizer: Path | None = None  # its files are saved beside the weights, so the dir loads on its own
    budget: Budget
    schedule: Schedule
    train: TrainConfig = TrainConfig()
    seed: int = 0
    meta: dict[str, Any] = Field(default_factory=dict)
    tensorboard: bool = False  # write <out_dir>/tensorboard/ too, when tensorboard is installed


class StepPlan(_Strict):
    """How the budget turns into steps, sequences and micro-batches for a given world size."""

    steps: int
    batch_seqs: int  # global sequences per optimizer step
    micro_seqs: int  # sequences per forward/backward on one rank
    accum: int  # micro-batches per rank per step
    world_size: int
    warmup: int
    tokens_per_step: int
    flops_per_step: float  # budget convention
    budget_note: str

    @property
    def rank_seqs(self) -> int:
        return self.batch_seqs // self.world_size


def plan_steps(job: TrainJob, world_size: int = 1) -> StepPlan:
    seq_len = job.size.seq_len
    batch_seqs = job.train.batch_tokens // seq_len
    if batch_seqs < 1:
        raise TrainingError(f"{job.out_dir}: train.batch_tokens {job.train.batch_tokens} is smaller than one sequence of {seq_len}")
    if batch_seqs % world_size:
        raise TrainingError(f"{job.out_dir}: {batch_seqs} sequences per step cannot be split over {world_size} processes")
    rank_seqs = batch_seqs // world_size
    micro_tokens = job.train.micro_batch_tokens or _micro_tokens_from_budget(job)
    micro_seqs = max(1, min(rank_seqs, micro_tokens // seq_len))
    while rank_seqs % micro_seqs:  # the largest micro-batch that divides the per-rank batch
        micro_seqs -= 1
    tokens_per_step = batch_seqs * seq_len
    flops_per_step = flops_per_token(job.size) * tokens_per_step
    b = job.budget
    if b.steps is not None:
        steps, note = b.steps, f"{b.steps} steps"
    elif b.tokens is not None:
        steps = b.tokens // tokens_per_step
        note = f"{b.tokens} tokens / {tokens_per_step} per step = {steps} steps"
    else:
        steps = math.floor(b.flops / flops_per_step)
        note = f"{b.flops:.4g} FLOPs / {flops_per_step:.4g} per step = {steps} steps"
    if steps < 1:
        raise TrainingError(f"{job.out_dir}: budget too small for one step ({note})")
    w = job.schedule.warmup
    warmup = min(steps, int(w) if w >= 1 else int(round(w * steps)))
    return StepPlan(
        steps=steps,
        batch_seqs=batch_seqs,
        micro_seqs=micro_seqs,
        accum=rank_seqs // micro_seqs,
        world_size=world_size,
        warmup=warmup,
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_per_step,
        budget_note=note,
    )


def _micro_tokens_from_budget(job: TrainJob) -> int:
    tokens = micro_tokens_for_budget(job.size, job.train.memory_gib, job.train.loss)
    if tokens == 0:
        need = estimate_bytes(job.size, job.size.seq_len, job.train.loss) / GIB
        raise TrainingError(
            f"{job.out_dir}: train.memory_gib {job.train.memory_gib:g} is too small for one sequence of "
            f"{job.size.seq_len} tokens of size {job.size.name or '?'} (about {need:.1f} GiB with loss {job.train.loss!r})"
        )
    return tokens


def lr_at(step: int, plan: StepPlan, schedule: Schedule) -> float:
    """Linear warmup over `plan.warmup` steps, then cosine from lr to min_lr over the job's own steps."""
    if plan.warmup and step < plan.warmup:
        return schedule.lr * (step + 1) / plan.warmup
    span = max(1, plan.steps - plan.warmup)
    progress = min(1.0, (step - plan.warmup) / span)
    return schedule.min_lr + 0.5 * (schedule.lr - schedule.min_lr) * (1 + math.cos(math.pi * progress))


def job_from_config(
    config: ExperimentConfig,
    *,
    size: str,
    domain_dirs: list[Path],
    out_dir: Path,
    budget: Budget,
    vocab: int,
    val_dirs: list[Path] | None = None,
    parent: Path | None = None,
    tokenizer_hash: str | None = None,
    tokenizer: Path | None = None,
    seed: int | None = None,
    meta: dict[str, Any] | None = None,
) -> TrainJob:
    """A job for one expert of `config`'s family: a seed (no parent) or a branch (parent given)."""
    return TrainJob(
        out_dir=out_dir,
        size=size_spec(config, size, vocab),
        parent=parent,
        data=[DataMix(domain_dir=d) for d in domain_dirs],
        val=list(val_dirs if val_dirs is not None else domain_dirs),
        tokenizer_hash=tokenizer_hash,
        tokenizer=tokenizer,
        budget=budget,
        schedule=config.schedule(seed=parent is None),
        train=config.train,
        seed=config.seed if seed is None else seed,
        meta=meta or {
            "domain": "+".join(Path(d).name for d in domain_dirs),
            "domains": [Path(d).name for d in domain_dirs],
            "size": size,
            "kind": "seed" if parent is None else "train",
            "config": config.name,
        },
    )
