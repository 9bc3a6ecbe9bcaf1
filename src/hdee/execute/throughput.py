"""How long a plan's training will take here, from throughput measured on this machine.

The rate is hardware-count FLOPs per second (`hdee.model.flops_per_token_full`): measured on
the run's own finished training jobs when it has some (their FLOPs over their recorded wall
time), else by timing a few real training steps (forward, backward, AdamW) of the plan's
smallest model on this machine's device. Larger models usually run at a higher rate, so the
benchmark errs long. Only training is estimated; scoring and evaluation come on top.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hdee.core.fsutil import read_json
from hdee.core.layout import RunLayout
from hdee.execute.kinds import MODEL_KINDS
from hdee.plan.schema import Plan

if TYPE_CHECKING:
    from hdee.config import ExperimentConfig

HARDWARE = "hardware"
#: the most FLOPs one benchmark step may cost, so `hdee plan` stays quick (a few seconds on a CPU)
MAX_STEP_FLOPS = {"cpu": 2e10, "cuda": 2e13}


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the plan's training jobs still to run, at `rate` on each of `workers`
    rate: float  # hardware FLOPs per second of one worker
    workers: int  # workers training side by side (the dependencies permitting)
    source: str  # how the rate was measured
    jobs: int  # training jobs still to run
    flops: float  # their hardware FLOPs


def _hardware(job) -> float:
    return float(job.flops_by.get(HARDWARE, job.flops))


def run_rate(plan: Plan, layout: RunLayout) -> tuple[float, str] | None:
    """FLOPs per second over the run's finished training jobs of this plan (None when none has a cost)."""
    flops = seconds = 0.0
    n = 0
    for job in plan.jobs:
        if job.kind not in MODEL_KINDS or not layout.done_record(job.id).is_file():
            continue
        try:
            cost = read_json(layout.done_record(job.id)).get("cost") or {}
        except (OSError, ValueError):
            continue
        if cost.get("seconds") and _hardware(job) > 0:
            flops, seconds, n = flops + _hardware(job), seconds + float(cost["seconds"]), n + 1
    if not n or seconds <= 0:
        return None
    return flops / seconds, f"measured on this run's {n} finished training job{'s' if n != 1 else ''}"


def bench_rate(cfg: "ExperimentConfig", plan: Plan, budget_s: float = 2.0) -> tuple[float, str]:
    """FLOPs per second of real training steps of the plan's smallest model on this machine."""
    import torch

    from hdee.model import build_model, flops_per_token_full, param_counts, size_spec
    from hdee.train.loss import CausalLMLoss

    sizes = sorted({str(j.size) for j in plan.jobs if j.kind in MODEL_KINDS and j.size})
    if not sizes:
        return 0.0, "no training jobs"
    specs = [size_spec(cfg, s, plan.vocab) for s in sizes]
    spec = min(specs, key=lambda s: param_counts(s)["non_embedding"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    per_seq = spec.seq_len * flops_per_token_full(spec)
    limit = MAX_STEP_FLOPS[device.type]
    if per_seq > limit:
        return 0.0, (f"not timed: one training sequence of size {spec.name} ({per_seq:.2g} FLOPs) is too large to time quickly "
                     f"on this {device.type.upper()}; once jobs have finished, `hdee plan --run-dir` measures them instead")
    seqs = max(1, min(8, cfg.train.batch_tokens // spec.seq_len, int(limit // per_seq)))
    model = build_model(spec, 0).to(device)
    loss = CausalLMLoss(model, "plain", device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(0, spec.vocab, (seqs, spec.seq_len + 1), generator=gen).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(windows).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cfg.execute.threads_per_worker)  # as one worker trains
    try:
        step()  # warm-up: allocation, kernels
        steps, start = 0, time.perf_counter()
        while steps < 1 or (time.perf_counter() - start < budget_s and steps < 50):
            step()
            steps += 1
        took = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    rate = steps * seqs * spec.seq_len * flops_per_token_full(spec) / took
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {cfg.execute.threads_per_worker} thread(s)"
    if device.type == "cpu" and hasattr(os, "getloadavg"):  # a busy machine trains slower, and so does the estimate
        where += f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    return rate, f"benchmarked here: {steps} training steps of size {spec.name} ({where})"


def workers(cfg: "ExperimentConfig") -> int:
    """How many jobs the local backend trains side by side: `execute.workers`, else one per
    `threads_per_worker` CPUs (one on a GPU machine, where jobs share the devices)."""
    import torch

    if cfg.execute.workers:
        return int(cfg.execute.workers)
    return 1 if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // cfg.execute.threads_per_worker)


def estimate(cfg: "ExperimentConfig", plan: Plan, layout: RunLayout, bench_s: float = 2.0) -> Estimate:
    """The training time of the plan's jobs not yet finished in `layout`."""
    from hdee.execute.jobs import is_done

    left = [j for j in plan.jobs if j.kind in MODEL_KINDS and not is_done(j, layout.root)]
    flops = sum(_hardware(j) for j in left)
    measured = run_rate(plan, layout) if layout.jobs_dir.is_dir() else None
    rate, source = measured or (bench_rate(cfg, plan, bench_s) if left else (0.0, "nothing left to train"))
    n = workers(cfg)
    if rate <= 0:
        return Estimate(float("nan"), 0.0, n, source, len(left), flops)
    return Estimate(flops / (rate * n), rate, n, source, len(left), flops)
