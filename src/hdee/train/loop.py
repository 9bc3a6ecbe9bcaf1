"""One training job: the AdamW loop over a job's steps, with validation, checkpoints and exact resume.

The pieces live beside it: where it runs (`device`), the loss (`loss`), the micro batch
(`memory`), the starting weights (`start`), validation (`validate`), files (`checkpoint`) and the
finished record (`record`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from hdee.data.loaders import TrainSampler
from hdee.core.errors import CheckpointError, DataError, TrainingError
from hdee.core.fsutil import clean_stale_temps, sha256_bytes
from hdee.config.sections import TRAIN_DISPLAY_ONLY
from hdee.model import flops_per_token_full
from hdee.train import checkpoint as ckpt
from hdee.train.device import DistContext, amp_dtype, autocast, default_context, make_optimizer, to_device
from hdee.train.domains import open_domain
from hdee.train.job import StepPlan, TrainJob, lr_at, plan_steps
from hdee.train.loss import CausalLMLoss
from hdee.train.metrics import MetricsLog, ProgressBar, ProgressHook
from hdee.train.record import expert_record
from hdee.train.start import initial_model, make_sampler, parent_record
from hdee.train.validate import val_windows, validate

log_ = logging.getLogger("hdee.train")

__all__ = ["DistContext", "job_fingerprint", "job_identity", "run_train_job"]


def job_fingerprint(job: TrainJob) -> str:
    """What a saved state must match to be resumed (display-only settings excluded). A seed-cache
    entry's state resumes for any job of that entry (`meta["cache"]`, whose key covers everything
    that shapes the weights), whether `hdee seeds` or a run, under whatever job id, started it."""
    if job.meta.get("cache"):
        return sha256_bytes(f"seed cache entry {job.meta['cache']}".encode())
    return _whole_job(job)


def _whole_job(job: TrainJob) -> str:
    """Every setting of the job (what every state was matched against before seed-cache entries
    resumed by their key: such a state still resumes under the job that wrote it)."""
    return sha256_bytes(job.model_dump_json(exclude={"tensorboard", "tokenizer"}).encode())


def job_identity(job: TrainJob) -> str:
    """What a finished expert must match to be returned for `job`: what shapes its weights (size,
    budget, schedule, trainer settings, seed, data, tokenizer, parent), with directories named by
    their last part, so a run directory that was moved or copied still finds its experts."""
    train = job.train.model_dump(mode="json", exclude=set(TRAIN_DISPLAY_ONLY))
    dump = job.model_dump(mode="json", include={"size", "budget", "schedule", "seed", "tokenizer_hash"})
    dump.update(train=train, job_id=job.meta.get("job_id"), out_dir=Path(job.out_dir).name,
                parent=Path(job.parent).name if job.parent is not None else None,
                data=[[Path(m.domain_dir).name, m.weight] for m in job.data], val=[Path(v).name for v in job.val])
    return sha256_bytes(json.dumps(dump, sort_keys=True).encode())


def _finished_for(job: TrainJob, steps: int) -> dict[str, Any]:
    """The finished expert in `job.out_dir`, refused unless it was trained for this very job."""
    out = Path(job.out_dir)
    record = ckpt.verify_expert(out)
    mine = {"job": job.meta.get("job_id"), "size": job.size.name, "steps": steps}
    theirs = {"job": record.get("job_id"), "size": record.get("size_name"), "steps": record.get("steps")}
    differ = [k for k in mine if mine[k] is not None and theirs[k] is not None and mine[k] != theirs[k]]
    recorded = record.get("job_identity")
    if differ or (recorded is not None and recorded != job_identity(job)):
        what = ("; ".join(f"{k} {theirs[k]} there, {mine[k]} here" for k in differ) if differ
                else "trained with other settings")
        raise CheckpointError(
            f"{out}: holds a finished expert of another job ({what}); move it away or delete it to train this one"
        )
    return record


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
    plan = plan_steps(job, ctx.world_size)
    if (out / ckpt.RECORD).is_file():
        return _finished_for(job, plan.steps)
    parent = parent_record(job)
    train_data = [open_domain(m.domain_dir, "train", job.size.vocab, job.tokenizer_hash) for m in job.data]
    try:
        sampler = make_sampler(job, [d.tokens for d in train_data], [d.name for d in train_data])
    except ValueError as exc:
        raise DataError(f"{out}: training data: {exc}") from None
    val_data, val_names = val_windows(job)

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out)
    ctx.barrier()
    state = ckpt.load_state(out)
    model = initial_model(job)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(ctx.device).train()
    optimizer = make_optimizer(model.parameters(), job.schedule.lr, job.train.betas, job.train.weight_decay, ctx)
    step = 0
    fingerprint = job_fingerprint(job)
    if state is not None and state["info"].get("job") not in (fingerprint, _whole_job(job)):
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
    loss_model = CausalLMLoss(model, job.train.loss, ctx.device, amp_dtype(ctx))
    train_model: torch.nn.Module = loss_model
    if ctx.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            loss_model, device_ids=[ctx.device.index] if ctx.is_cuda else None
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
            last_val = validate(loss_model, val_data, eval_batch, ctx)
            row = {"step": 0, "tokens": 0, "flops": 0.0, "flops_full": 0.0, "val_loss": last_val}
            if log:
                log.write(row)
        while step < plan.steps:
            row = _train_step(job, plan, train_model, model, optimizer, sampler, step, ctx)
            row["flops_full"] = row["tokens"] * full_per_token
            step += 1
            if step % job.train.eval_every == 0 or step == plan.steps:
                last_val = validate(loss_model, val_data, eval_batch, ctx)
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
        record = ckpt.save_expert(
            out, model, {**expert_record(job, plan, parent, train_data, sampler, last_val, val_names), "job_identity": job_identity(job)},
            job.tokenizer, job.size.seq_len
        )
        ckpt.remove_state(out)
    ctx.barrier()
    return record if record is not None else _finished_for(job, plan.steps)


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
    mine = to_device(batch[ctx.rank * plan.rank_seqs : (ctx.rank + 1) * plan.rank_seqs], ctx)  # ... and keeps its slice
    total = torch.zeros((), dtype=torch.float32, device=ctx.device)
    for i in range(plan.accum):  # no host sync in here: the loss stays on the device
        x = mine[i * plan.micro_seqs : (i + 1) * plan.micro_seqs]
        last = i == plan.accum - 1
        sync = contextlib.nullcontext() if last or ctx.world_size == 1 else train_model.no_sync()
        with sync:
            with autocast(ctx):
                loss = train_model(x) / plan.accum
            loss.backward()
        total += loss.detach()
    total = ctx.mean(total)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), job.train.grad_clip)
    loss_value, grad_value = torch.stack([total, grad_norm.to(total.dtype)]).tolist()  # the step's one sync
    if not math.isfinite(loss_value):
        kept = ckpt.read_state_step(job.out_dir)
        where = f"the last good checkpoint is step {kept} in {Path(job.out_dir) / ckpt.STATE_DIR}" if kept else "no checkpoint was kept"
        raise TrainingError(f"{job.out_dir}: loss became {loss_value} at step {step + 1}; training stopped, {where}")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ctx.is_cuda:
        torch.cuda.synchronize(ctx.device)
    done = step + 1
    return {
        "step": done,
        "tokens": done * plan.tokens_per_step,
        "flops": done * plan.flops_per_step,
        "lr": lr,
        "loss": loss_value,
        "grad_norm": grad_value,
        "seconds": time.perf_counter() - t0,
    }


