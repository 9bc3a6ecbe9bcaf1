"""The plan: the job DAG's schema (`schema`, what executors read) and its builder (`builder`)."""

from hdee.plan.builder import build_plan, prepare_job
from hdee.plan.schema import MODEL_KINDS, EnsemblePlan, Job, JobKind, Plan, topological

__all__ = ["MODEL_KINDS", "EnsemblePlan", "Job", "JobKind", "Plan", "build_plan", "prepare_job", "topological"]
