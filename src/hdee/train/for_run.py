"""A plan's training job as the trainer takes it: the `TrainJob` of one seed, pilot, expert or
dense job of a run, its data, parent and tokenizer found by the run's layout."""

from __future__ import annotations

from typing import Protocol, Sequence

from hdee.config import ExperimentConfig
from hdee.data.tokenizer import tokenizer_hash
from hdee.model import size_spec
from hdee.core.layout import RunLayout
from hdee.train.job import Budget, DataMix, TrainJob


class PlannedTraining(Protocol):
    """What of a plan job (`hdee.plan.schema.Job`) a training run reads."""

    id: str
    kind: str
    size: str | None
    parent: str | None
    domains: Sequence[str]
    weights: Sequence[float]
    steps: int | None
    seed: int | None
    lineage: str | None
    iteration: int | None
    repeat: int


def train_job_for(job: PlannedTraining, layout: RunLayout, cfg: ExperimentConfig, vocab: int) -> TrainJob:
    """The `TrainJob` that trains `job` into `layout.expert_dir(job.id)`."""
    return TrainJob(
        out_dir=layout.expert_dir(job.id),
        size=size_spec(cfg, str(job.size), vocab),
        parent=layout.expert_dir(job.parent) if job.parent else None,
        data=[DataMix(domain_dir=layout.domain_dir(d), weight=w) for d, w in zip(job.domains, job.weights)],
        val=[layout.domain_dir(d) for d in job.domains],
        tokenizer_hash=tokenizer_hash(layout.tokenizer_path),
        tokenizer=layout.tokenizer_path,
        budget=Budget(steps=job.steps),
        schedule=cfg.schedule(seed=job.kind == "seed"),
        train=cfg.seed_train() if job.kind == "seed" else cfg.train,
        seed=int(job.seed or 0),
        meta={
            "job_id": job.id,
            "kind": job.kind,
            "lineage": job.lineage,
            "iteration": job.iteration,
            "domain": job.domains[0] if len(job.domains) == 1 else None,
            "domains": list(job.domains),
            "repeat": job.repeat,
            "parent_id": job.parent,
            "config": cfg.name,
        },
    )


def import_seed_for(job: PlannedTraining, layout: RunLayout, cfg: ExperimentConfig, vocab: int,
                    source: str | None = None) -> dict:
    """Import a checkpoint as this run's seed model of `job.size`: `source`, else the config's
    pretrained checkpoint of that size."""
    from hdee.train.pretrained import import_seed

    meta = {"job_id": job.id, "kind": "seed", "domains": list(job.domains), "repeat": job.repeat, "config": cfg.name}
    if source is None:
        source = cfg.seed_models.from_[str(job.size)]
    return import_seed(source, layout.expert_dir(job.id), size_spec(cfg, str(job.size), vocab),
                       tokenizer=layout.tokenizer_path, tokenizer_hash=tokenizer_hash(layout.tokenizer_path),
                       val_dirs=[layout.domain_dir(d) for d in job.domains], eval_tokens=cfg.seed_train().eval_tokens, meta=meta)
