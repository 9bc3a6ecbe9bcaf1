"""The plan: the job DAG's schema (`schema`, what executors read) and its builder (`builder`)."""

from hdee.plan.builder import build_plan, prepare_job
from hdee.plan.schema import EnsemblePlan, Job, JobKind, Plan, topological

__all__ = ["EnsemblePlan", "Job", "JobKind", "Plan", "build_plan", "prepare_job", "topological"]
