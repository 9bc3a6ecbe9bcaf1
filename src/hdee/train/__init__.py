"""One training job: a `TrainJob` in, a finished expert directory (HF model + hdee.json) out.

The names below load on first use, so that a light module of this package (`seed_cache`, read by
`hdee plan`) does not import torch and the trainer."""

from typing import Any

__all__ = ["Budget", "DataMix", "TrainJob", "plan_steps", "run_train_job"]


def __getattr__(name: str) -> Any:
    if name in ("Budget", "DataMix", "TrainJob", "plan_steps"):
        from hdee.train import job

        return getattr(job, name)
    if name == "run_train_job":
        from hdee.train.loop import run_train_job

        return run_train_job
    raise AttributeError(f"module 'hdee.train' has no attribute {name!r}")
