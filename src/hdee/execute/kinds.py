"""The job kinds, one table: for each kind of plan job, how a worker runs it, which files it
leaves (what its done record checksums), whether it makes a model, and where its cost is summed
per strategy. A new kind is one entry here (and its name in `hdee.plan.schema.JobKind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hdee.config import ExperimentConfig
from hdee.expert_dir import CARD as CARD_FILE
from hdee.plan.schema import Job
from hdee.core.layout import RunLayout
from hdee.run import prepared_vocab

#: the trainer's progress hook as an executor sees it: (step, steps)
StepProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class JobKindSpec:
    run: Callable[[Job, RunLayout, ExperimentConfig, StepProgress], dict]
    outputs: Callable[[Job, RunLayout], list[Path]]
    makes_model: bool
    cost_group: str | None  # "seed", "domain_phase" or "scoring" in a strategy's costs; None: not charged


def _prepare(job: Job, layout: RunLayout, cfg: ExperimentConfig, progress: StepProgress) -> dict:
    from hdee.data.prepare import prepare

    prepare(cfg, layout)
    return {"vocab": prepared_vocab(layout)}


def _prepare_outputs(job: Job, layout: RunLayout) -> list[Path]:
    from hdee.data.shards import MANIFEST

    files = [layout.tokenizer_path]
    files += sorted(layout.domains_dir.glob(f"*/{MANIFEST}"))
    files += sorted(layout.domains_dir.glob("*/*.bin"))  # a damaged shard makes prepare run again
    return files


def _train(job: Job, layout: RunLayout, cfg: ExperimentConfig, progress: StepProgress) -> dict:
    from hdee.train import run_train_job
    from hdee.train.for_run import import_seed_for, train_job_for

    vocab = prepared_vocab(layout)
    if job.kind == "seed" and cfg.seed_models.from_ is not None:
        return import_seed_for(job, layout, cfg, vocab)
    if job.kind == "seed" and job.cache is not None:  # trained once into the seed cache, then imported
        from hdee.expert_dir import is_finished
        from hdee.train.seed_cache import model_dir, train_cached

        if not is_finished(layout.expert_dir(job.id)):  # a seed imported already needs its entry no more
            train_cached(job.cache, train_job_for(job, layout, cfg, vocab), progress=_step_hook(progress, int(job.steps or 0)))
        return import_seed_for(job, layout, cfg, vocab, source=str(model_dir(job.cache)))
    result = run_train_job(train_job_for(job, layout, cfg, vocab), progress=_step_hook(progress, int(job.steps or 0)))
    return dict(result or {})


def _step_hook(progress: StepProgress, steps: int) -> Callable[[dict], None]:
    """The trainer calls its hook with every metrics row; report (step, steps) from it."""

    def hook(row: dict) -> None:
        if "step" in row:
            progress(int(row["step"]), steps)

    return hook


def _model_outputs(job: Job, layout: RunLayout) -> list[Path]:
    """Every file of the model directory but its card, which evaluation rewrites with the measured perplexities."""
    d = layout.expert_dir(job.id)
    keep = (p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != CARD_FILE) if d.is_dir() else ()
    return sorted(keep)


def _score(job: Job, layout: RunLayout, cfg: ExperimentConfig, progress: StepProgress) -> dict:
    from hdee.ensemble.scoring import score_domains

    score_domains(layout, str(job.expert), layout.expert_dir(str(job.expert)), list(job.domains), cfg)
    return {}


def _score_outputs(job: Job, layout: RunLayout) -> list[Path]:
    from hdee.ensemble.scoring import SPLITS_SCORED, sidecar_path

    files = []
    for domain in job.domains:
        for split in SPLITS_SCORED:
            path = layout.score_path(str(job.expert), domain, split)
            files += [path, sidecar_path(path)]
    return [p for p in files if p.is_file()]


JOB_KINDS: dict[str, JobKindSpec] = {
    "prepare": JobKindSpec(_prepare, _prepare_outputs, makes_model=False, cost_group=None),
    "seed": JobKindSpec(_train, _model_outputs, makes_model=True, cost_group="seed"),
    "pilot": JobKindSpec(_train, _model_outputs, makes_model=True, cost_group="domain_phase"),
    "train": JobKindSpec(_train, _model_outputs, makes_model=True, cost_group="domain_phase"),
    "dense": JobKindSpec(_train, _model_outputs, makes_model=True, cost_group="domain_phase"),
    "score": JobKindSpec(_score, _score_outputs, makes_model=False, cost_group="scoring"),
}
MODEL_KINDS = tuple(k for k, spec in JOB_KINDS.items() if spec.makes_model)
COST_GROUPS = {k: spec.cost_group for k, spec in JOB_KINDS.items() if spec.cost_group}
