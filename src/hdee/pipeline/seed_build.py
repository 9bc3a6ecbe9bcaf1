"""`build_seeds`: the seed models of a config, trained into the seed cache ahead of the main job.

For a config with `seed_models.cache = true` it prepares the run's data (the seeds read its
tokenizer and seed-domain shards), then runs the seed jobs of draws 0..draws-1: draw k is the
seed models repeat k of `--vary seed-models` uses (hdee.plan.seeds). A seed job trains its cache
entry when it is missing (hdee.train.seed_cache) and imports it into the run, so the main job finds
its seeds done; run again, it trains nothing.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from hdee.config import ExperimentConfig
from hdee.core.errors import ConfigError
from hdee.execute import make_executor
from hdee.run import prepared_vocab
from hdee.execute.view import RunView
from hdee.expert_dir import load_record
from hdee.core.fsutil import clean_stale_temps
from hdee.core.layout import RunLayout
from hdee.pipeline.experiment import snapshot_config
from hdee.plan import Job, build_plan, prepare_job
from hdee.train.seed_cache import is_built, model_dir


def seed_jobs(cfg: ExperimentConfig, vocab: int, draws: int) -> list[tuple[int, Job]]:
    """(draw, seed job) for every seed model the config's strategies need in draws 0..draws-1."""
    out: dict[str, tuple[int, Job]] = {}
    for draw in range(draws):
        plan = build_plan(cfg, vocab, repeat=draw, vary="seed-models")
        for job in plan.jobs_of("seed"):
            out.setdefault(job.id, (draw, job))
    return list(out.values())


def check_buildable(cfg: ExperimentConfig, draws: int) -> None:
    """ConfigError unless `cfg` caches its seeds and `draws` is at least 1 (before anything is written)."""
    if not cfg.seed_models.cache:
        raise ConfigError(f"config {cfg.name!r} trains its seeds inside the run: set seed_models.cache = true to build them apart")
    if draws < 1:
        raise ConfigError(f"--draws must be at least 1, got {draws}")


def build_seeds(
    cfg: ExperimentConfig,
    layout: RunLayout,
    draws: int = 1,
    backend: str | None = None,
    workers: int | None = None,
    force: bool = False,
    view: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train (or find) the cached seeds of draws 0..draws-1 and import them into `layout`'s run."""
    check_buildable(cfg, draws)
    t0 = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    snapshot_config(cfg, layout, force)
    for d in (layout.root, layout.experts_dir, layout.jobs_dir):
        clean_stale_temps(d)
    with RunView(console=console, live=view, title=f"{cfg.name}: seeds") as live, make_executor(
        cfg, layout.root, backend=backend, workers=workers
    ) as executor:
        live.add_jobs([prepare_job(cfg)], "prepare")
        ran = len(executor.run([prepare_job(cfg)], on_event=live))
        jobs = seed_jobs(cfg, prepared_vocab(layout), draws)
        built_before = {job.id: is_built(str(job.cache)) for _, job in jobs}
        live.add_jobs([job for _, job in jobs], f"seeds of {draws} draw{'s' if draws != 1 else ''}")
        ran += len(executor.run([job for _, job in jobs], on_event=live))
    rows = []
    for draw, job in jobs:
        rec = load_record(layout.expert_dir(job.id))
        rows.append({
            "draw": draw, "size": job.size, "job": job.id, "entry": str(model_dir(str(job.cache))),
            "trained_now": not built_before[job.id], "steps": job.steps, "tokens": job.tokens,
            "flops": job.flops, "val_loss": rec.final_val_loss,
        })
    return {"seeds": rows, "jobs_run": ran, "seconds": round(time.monotonic() - t0, 1)}
