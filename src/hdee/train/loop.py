"""One training job: init (scratch or parent), the AdamW loop, validation, checkpoints, exact resume."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from hdee.data.loaders import TrainSampler, eval_windows
from hdee.errors import CheckpointError, DataError, TrainingError
from hdee.fsutil import clean_stale_temps, read_json, sha256_bytes
from hdee.model import attn_implementation, build_model, flops_per_token, flops_per_token_full, llama_config, param_counts
from hdee.train import checkpoint as ckpt
from hdee.train.domains import open_domain
from hdee.train.job import StepPlan, TrainJob, lr_at, plan_steps
from hdee.train.metrics import MetricsLog, ProgressBar, ProgressHook

log_ = logging.getLogger("hdee.train")

_ARCH_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "tie_word_embeddings",
)


@dataclass
class DistContext:
    """Where this process sits in a data-parallel group (world_size 1 = no group)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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


def job_fingerprint(job: TrainJob) -> str:
    """What a saved state must match to be resumed (display-only settings excluded)."""
    return sha256_bytes(job.model_dump_json(exclude={"tensorboard"}).encode())


def default_context() -> DistContext:
    return DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def compute_loss(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [n, seq_len + 1]."""
    logits = model(input_ids=windows[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1))


def _autocast(ctx: DistContext):
    if ctx.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()  # fp32 on CPU, always


# ------------------------------------------------------------------ setup


def _parent_record(job: TrainJob) -> dict[str, Any] | None:
    if job.parent is None:
        return None
    record = ckpt.verify_expert(job.parent)
    config = read_json(Path(job.parent) / "config.json")
    want = llama_config(job.size).to_dict()
    for key in _ARCH_KEYS:
        if config.get(key) != want.get(key):
            raise CheckpointError(
                f"{job.parent}: parent has {key}={config.get(key)}, the job's size {job.size.name or ''} needs {want.get(key)}"
            )
    return {"path": str(job.parent), "model_sha256": record["model_sha256"]}


def _initial_model(job: TrainJob) -> LlamaForCausalLM:
    if job.parent is None:
        return build_model(job.size, job.seed)
    model = LlamaForCausalLM.from_pretrained(job.parent, dtype=torch.float32, attn_implementation=attn_implementation())
    return model.float()


def _val_windows(job: TrainJob) -> tuple[np.ndarray, list[str]]:
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
def _validate(model: torch.nn.Module, windows: np.ndarray, batch: int, ctx: DistContext) -> float | None:
    if len(windows) == 0:
        return None
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    mine = windows[ctx.rank :: ctx.world_size]
    for i in range(0, len(mine), batch):
        x = torch.from_numpy(mine[i : i + batch]).to(ctx.device)
        with _autocast(ctx):
            loss = compute_loss(model, x)
        total[0] += loss.double() * x[:, 1:].numel()
        total[1] += x[:, 1:].numel()
    total = ctx.sum(total)
    model.train(was_training)
    return float(total[0] / total[1])


# ------------------------------------------------------------------ the job


def run_train_job(
    job: TrainJob,
    progress: bool | ProgressHook | None = None,
    *,
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """Train `job` to completion and return its `hdee.json` record.

    A finished job (verified `hdee.json`) returns at once; an unfinished one resumes from
    `<out_dir>/state/` and ends with the same weights as an uninterrupted run. `progress=True`
    shows a rich bar; a callable receives every metrics row instead.
    """
    ctx = dist or default_context()
    out = Path(job.out_dir)
    if (out / ckpt.RECORD).is_file():
        return ckpt.verify_expert(out)
    plan = plan_steps(job, ctx.world_size)
    parent = _parent_record(job)
    train_data = [open_domain(m.domain_dir, "train", job.size.vocab, job.tokenizer_hash) for m in job.data]
    try:
        sampler = TrainSampler(
            [d.tokens for d in train_data],
            job.size.seq_len,
            seed=job.seed,
            weights=[m.weight for m in job.data],
            names=[d.name for d in train_data],
        )
    except ValueError as exc:
        raise DataError(f"{out}: training data: {exc}") from None
    val_windows, val_names = _val_windows(job)

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out)
    ctx.barrier()
    state = ckpt.load_state(out)
    model = _initial_model(job)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(ctx.device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=job.schedule.lr,
        betas=job.train.betas,
        weight_decay=job.train.weight_decay,
        foreach=False,
    )
    step = 0
    fingerprint = job_fingerprint(job)
    if state is not None and state["info"].get("job") != fingerprint:
        raise CheckpointError(f"{out / ckpt.STATE_DIR}: trainer state belongs to a different job; delete it to restart")
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["info"]["sampler"])
        ckpt.restore_rng(state)
        step = int(state["info"]["step"])
    del state
    if ctx.is_main:
        log_.info("%s: %s (%d sequences per step, micro-batch %d x %d accumulation x %d ranks)%s",
                  out, plan.budget_note, plan.batch_seqs, plan.micro_seqs, plan.accum, plan.world_size,
                  f", resuming at step {step}" if step else "")
    train_model: torch.nn.Module = model
    if ctx.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if job.train.compile:
        train_model = torch.compile(train_model)

    log = MetricsLog(out, step if step else None, tensorboard=job.tensorboard) if ctx.is_main else None
    hook: Callable[[dict], None] | None = None
    bar = None
    if ctx.is_main and progress is True:
        bar = ProgressBar(plan.steps, step, label=str(job.meta.get("domain") or out.name))
        hook = bar
    elif ctx.is_main and callable(progress):
        hook = progress
    full_per_token = flops_per_token_full(job.size)
    eval_batch = max(1, plan.micro_seqs)
    last_val = None
    try:
        if step == 0:
            last_val = _validate(model, val_windows, eval_batch, ctx)
            row = {"step": 0, "tokens": 0, "flops": 0.0, "flops_full": 0.0, "val_loss": last_val}
            if log:
                log.write(row)
        while step < plan.steps:
            row = _train_step(job, plan, train_model, model, optimizer, sampler, step, ctx)
            row["flops_full"] = row["tokens"] * full_per_token
            step += 1
            if step % job.train.eval_every == 0 or step == plan.steps:
                last_val = _validate(model, val_windows, eval_batch, ctx)
                row["val_loss"] = last_val
                row["epochs"] = sampler.epochs
            row["tokens_per_s"] = plan.tokens_per_step / max(row.pop("seconds"), 1e-9)
            row["flops_per_s"] = full_per_token * row["tokens_per_s"]
            if log:
                log.write(row)
            if step % job.train.checkpoint_every == 0 and step < plan.steps:
                if ctx.is_main:
                    ckpt.save_state(out, model, optimizer, {"step": step, "sampler": sampler.state_dict(), "job": fingerprint})
                ctx.barrier()
            if hook:
                hook(row)
    finally:
        if log:
            log.close()
        if bar:
            bar.close()

    record = None
    if ctx.is_main:
        record = ckpt.save_expert(out, model, _record(job, plan, parent, train_data, sampler, last_val, val_names))
        ckpt.remove_state(out)
    ctx.barrier()
    return record if record is not None else ckpt.verify_expert(out)


def _train_step(
    job: TrainJob,
    plan: StepPlan,
    train_model: torch.nn.Module,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: TrainSampler,
    step: int,
    ctx: DistContext,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    lr = lr_at(step, plan, job.schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batch = sampler.next_batch(plan.batch_seqs)  # every rank draws the same global batch ...
    mine = batch[ctx.rank * plan.rank_seqs : (ctx.rank + 1) * plan.rank_seqs]  # ... and keeps its slice
    total = torch.zeros((), dtype=torch.float32, device=ctx.device)
    for i in range(plan.accum):
        x = torch.from_numpy(mine[i * plan.micro_seqs : (i + 1) * plan.micro_seqs]).to(ctx.device, non_blocking=True)
        last = i == plan.accum - 1
        sync = contextlib.nullcontext() if last or ctx.world_size == 1 else train_model.no_sync()
        with sync:
            with _autocast(ctx):
                loss = compute_loss(train_model, x) / plan.accum
            loss.backward()
        total += loss.detach()
    total = ctx.mean(total)
    loss_value = float(total)
    if not math.isfinite(loss_value):
        kept = ckpt.read_state_step(job.out_dir)
        where = f"the last good checkpoint is step {kept} in {Path(job.out_dir) / ckpt.STATE_DIR}" if kept else "no checkpoint was kept"
        raise TrainingError(f"{job.out_dir}: loss became {loss_value} at step {step + 1}; training stopped, {where}")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), job.train.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    done = step + 1
    return {
        "step": done,
        "tokens": done * plan.tokens_per_step,
        "flops": done * plan.flops_per_step,
        "lr": lr,
        "loss": loss_value,
        "grad_norm": float(grad_norm),
        "seconds": time.perf_counter() - t0,
    }


def _record(job, plan, parent, train_data, sampler, val_loss, val_names) -> dict[str, Any]:
    meta = dict(job.meta)
    counts = param_counts(job.size)
    return {
        **meta,
        "format": 1,
        "meta": meta,
        "domain": meta.get("domain"),
        "lineage": meta.get("lineage"),
        "iteration": meta.get("iteration"),
        "size": job.size.model_dump(mode="json"),
        "size_name": job.size.name,
        "params": counts,
        "steps": plan.steps,
        "tokens": plan.steps * plan.tokens_per_step,
        "budget": job.budget.model_dump(mode="json", exclude_none=True),
        "budget_note": plan.budget_note,
        "flops": plan.steps * plan.flops_per_step,
        "flops_convention": "6 x non-embedding params x tokens",
        "flops_full": plan.steps * plan.tokens_per_step * flops_per_token_full(job.size),
        "flops_full_convention": "6 x (non-embedding + head) params x tokens + causal attention 6*L*T*d",
        "parent": parent,
        "data": [
            {"domain": d.name, "domain_dir": str(d.domain_dir), "weight": m.weight, "manifest_sha256": d.fingerprint}
            for d, m in zip(train_data, job.data)
        ],
        "epochs": sampler.epochs,
        "val_domains": val_names,
        "tokenizer_hash": job.tokenizer_hash,
        "final_val_loss": val_loss,
        "seed": job.seed,
        "schedule": job.schedule.model_dump(mode="json"),
        "train": job.train.model_dump(mode="json"),
        "batch": {"seqs": plan.batch_seqs, "micro_seqs": plan.micro_seqs, "accum": plan.accum, "world_size": plan.world_size},
        "flops_per_token": flops_per_token(job.size),
    }
