"""One training job: a `TrainJob` in, a finished expert directory (HF model + hdee.json) out."""

from hdee.train.job import Budget, DataMix, TrainJob, plan_steps
from hdee.train.loop import run_train_job

__all__ = ["Budget", "DataMix", "TrainJob", "plan_steps", "run_train_job"]
