"""One function every executor calls: `run_job(job_spec_json, run_dir)`.

It dispatches by kind to data preparation, training or scoring (the logic lives there), then
writes a done record `jobs/<id>.json` listing the sha256 of every output, so a later run can
skip the job after checking those checksums. Worker processes import this module only.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Callable

from hdee.config import ExperimentConfig
from hdee.errors import ExecutionError
from hdee.execute import fault
from hdee.fsutil import atomic_write_json, read_json, sha256_file
from hdee.layout import RunLayout
from hdee.plan.schema import MODEL_KINDS, Job
from hdee.provenance import job_cost

ProgressFn = Callable[[str, int, int], None]  # (job id, step, steps)
#: what an executor calls for one job: (job spec JSON, run dir, progress) -> result
JobRunner = Callable[[str, str, "ProgressFn | None"], dict]


@functools.lru_cache(maxsize=4)
def _load_config(path: str, mtime_ns: int) -> ExperimentConfig:
    return ExperimentConfig.model_validate(read_json(path))


def run_config(layout: RunLayout) -> ExperimentConfig:
    """The config snapshot the pipeline wrote into the run directory."""
    path = layout.config_snapshot
    if not path.is_file():
        raise ExecutionError(f"{layout.root}: no config.json; run the pipeline (hdee run) to create it")
    return _load_config(str(path), path.stat().st_mtime_ns)


def run_vocab(layout: RunLayout) -> int:
    """Vocabulary size of the run's tokenizer (the models' embedding rows)."""
    from hdee.data.tokenizer import vocab_size

    if not layout.tokenizer_path.is_file():
        raise ExecutionError(f"{layout.tokenizer_path}: no tokenizer; the prepare job has not run")
    return vocab_size(layout.tokenizer_path)


def outputs_of(job: Job, layout: RunLayout) -> list[Path]:
    """The files a finished job leaves behind (what its done record checksums)."""
    if job.kind == "prepare":
        files = [layout.tokenizer_path]
        from hdee.data.shards import MANIFEST

        files += sorted(layout.domains_dir.glob(f"*/{MANIFEST}"))
        files += sorted(layout.domains_dir.glob("*/*.bin"))  # a damaged shard makes prepare run again
        return files
    if job.kind in MODEL_KINDS:
        d = layout.expert_dir(job.id)
        return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) if d.is_dir() else []
    if job.kind == "score":
        from hdee.ensemble.scoring import SPLITS_SCORED, sidecar_path

        files = []
        for domain in job.domains:
            for split in SPLITS_SCORED:
                path = layout.score_path(str(job.expert), domain, split)
                files += [path, sidecar_path(path)]
        return [p for p in files if p.is_file()]
    raise ExecutionError(f"job {job.id}: unknown kind {job.kind!r}")


def is_done(job: Job, run_dir: str | Path) -> bool:
    """True when the done record exists and every output it lists still has its checksum."""
    path = RunLayout(run_dir).job_record(job.id)
    if not path.is_file():
        return False
    try:
        rec = read_json(path)
        outputs = rec["outputs"]
    except (ValueError, KeyError, OSError):
        return False
    if rec.get("id") != job.id or not outputs:
        return False
    root = Path(run_dir)
    for rel, digest in outputs.items():
        p = root / rel
        if not p.is_file() or sha256_file(p) != digest:
            return False
    return True


def _train_job(job: Job, layout: RunLayout, cfg: ExperimentConfig):
    from hdee.data.tokenizer import tokenizer_hash
    from hdee.model import size_spec
    from hdee.train import TrainJob
    from hdee.train.job import Budget, DataMix

    spec = size_spec(cfg, str(job.size), run_vocab(layout))
    return TrainJob(
        out_dir=layout.expert_dir(job.id),
        size=spec,
        parent=layout.expert_dir(job.parent) if job.parent else None,
        data=[DataMix(domain_dir=layout.domain_dir(d), weight=w) for d, w in zip(job.domains, job.weights)],
        val=[layout.domain_dir(d) for d in job.domains],
        tokenizer_hash=tokenizer_hash(layout.tokenizer_path),
        tokenizer=layout.tokenizer_path,
        budget=Budget(steps=job.steps),
        schedule=cfg.schedule(seed=job.kind == "seed"),
        train=cfg.train,
        seed=int(job.seed or 0),
        meta={
            "job_id": job.id,
            "kind": job.kind,
            "lineage": job.lineage,
            "iteration": job.iteration,
            "domain": job.domains[0] if len(job.domains) == 1 else None,
            "domains": job.domains,
            "repeat": job.repeat,
            "parent_id": job.parent,
            "config": cfg.name,
        },
    )


def _import_seed(job: Job, layout: RunLayout, cfg: ExperimentConfig, source: str | None = None) -> dict:
    from hdee.data.tokenizer import tokenizer_hash
    from hdee.model import size_spec
    from hdee.train.pretrained import import_seed

    spec = size_spec(cfg, str(job.size), run_vocab(layout))
    meta = {"job_id": job.id, "kind": "seed", "domains": job.domains, "repeat": job.repeat, "config": cfg.name}
    if source is None:
        source = cfg.seed_models.from_[str(job.size)]
    return import_seed(source, layout.expert_dir(job.id), spec,
                       tokenizer=layout.tokenizer_path, tokenizer_hash=tokenizer_hash(layout.tokenizer_path),
                       val_dirs=[layout.domain_dir(d) for d in job.domains], eval_tokens=cfg.train.eval_tokens, meta=meta)


def _dispatch(job: Job, layout: RunLayout, progress: Callable[[int, int], None]) -> dict:
    cfg = run_config(layout)
    if job.kind == "prepare":
        from hdee.data.prepare import prepare

        prepare(cfg, layout)
        return {"vocab": run_vocab(layout)}
    if job.kind == "seed" and cfg.seed_models.from_ is not None:
        return _import_seed(job, layout, cfg)
    if job.kind == "seed" and job.cache is not None:
        from hdee.expert_dir import is_finished
        from hdee.seed_cache import model_dir, train_cached

        if not is_finished(layout.expert_dir(job.id)):  # a seed imported already needs its entry no more
            train_cached(job.cache, _train_job(job, layout, cfg), progress=_train_progress(progress, int(job.steps or 0)))
        return _import_seed(job, layout, cfg, source=str(model_dir(job.cache)))
    if job.kind in MODEL_KINDS:
        from hdee.train import run_train_job

        result = run_train_job(_train_job(job, layout, cfg), progress=_train_progress(progress, int(job.steps or 0)))
        return dict(result or {})
    if job.kind == "score":
        from hdee.ensemble.scoring import score_domains

        score_domains(layout, str(job.expert), layout.expert_dir(str(job.expert)), list(job.domains), cfg)
        return {}
    raise ExecutionError(f"job {job.id}: unknown kind {job.kind!r}")


def _train_progress(progress: Callable[[int, int], None], steps: int) -> Callable[[dict], None]:
    """The trainer calls its hook with every metrics row; report (step, steps) from it."""

    def cb(row: dict) -> None:
        if "step" in row:
            progress(int(row["step"]), steps)

    return cb


def run_job(job_spec_json: str, run_dir: str | Path, progress: ProgressFn | None = None) -> dict:
    """Run one job of a plan (idempotent) and write its done record; returns the job's result."""
    job = Job.model_validate_json(job_spec_json)
    layout = RunLayout(run_dir)
    trap = fault.arm(job.kind, layout.root, job.steps)

    def on_progress(step: int, steps: int) -> None:
        if progress is not None:
            progress(job.id, step, steps)
        trap.progress(step, steps)

    t0 = time.perf_counter()
    result = _dispatch(job, layout, on_progress)
    cost = job_cost(time.perf_counter() - t0, job.kind != "prepare" and _cuda_available())
    trap.before_record()
    write_record(job, layout.root, result, outputs_of(job, layout), cost)
    return result


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def write_record(job: Job, run_dir: str | Path, result: dict, outputs: list[Path], cost: dict | None = None) -> None:
    """Mark `job` done: its result, the sha256 of each output file (paths relative to run_dir) and its cost."""
    root = Path(run_dir)
    if not outputs:
        raise ExecutionError(f"job {job.id} finished but left no outputs under {root}")
    atomic_write_json(
        RunLayout(root).job_record(job.id),
        {
            "id": job.id,
            "kind": job.kind,
            "result": result,
            "outputs": {os.path.relpath(p, root): sha256_file(p) for p in outputs},
            **({"cost": cost} if cost is not None else {}),
        },
    )
