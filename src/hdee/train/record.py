"""The `hdee.json` record of a finished job: what was trained, on what, for how much compute."""

from __future__ import annotations

from typing import Any

from hdee.data.loaders import TrainSampler
from hdee.model import flops_per_token, flops_per_token_full, param_counts
from hdee.train.domains import DomainData
from hdee.train.job import StepPlan, TrainJob


def expert_record(
    job: TrainJob,
    plan: StepPlan,
    parent: dict[str, Any] | None,
    train_data: list[DomainData],
    sampler: TrainSampler,
    val_loss: float | None,
    val_names: list[str],
) -> dict[str, Any]:
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
