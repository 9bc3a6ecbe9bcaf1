"""The plan's schema: jobs, per-strategy ensembles and the DAG, as written to plan.json.

This is the contract between the plan builder and the executors; it knows nothing of strategies.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hdee.core.errors import PlanError
from hdee.core.fsutil import atomic_write_json, read_json
from hdee.core.names import JobId, Name

JobKind = Literal["prepare", "seed", "train", "pilot", "dense", "score"]
ENSEMBLE_KINDS = ("final", "all")  # the paper's final experts; BTM's forest of every expert


class Job(BaseModel):
    """One unit of work; `run_job` in hdee.execute.jobs turns it into a call of data/train/ensemble."""

    model_config = ConfigDict(extra="forbid")

    # every name below becomes part of a path under the run directory (hdee.core.names)
    id: JobId
    kind: JobKind
    deps: list[JobId] = []
    size: Name | None = None
    steps: int | None = None
    tokens: int | None = None
    flops: float = 0.0  # in the plan's FLOP convention (Plan.flops_convention)
    flops_by: dict[str, float] = {}  # in every convention (hdee.budget.CONVENTIONS)
    domains: list[Name] = []
    weights: list[float] = []
    parent: JobId | None = None
    seed: int | None = None
    lineage: Name | None = None
    iteration: int | None = None
    expert: JobId | None = None
    domain: Name | None = None
    repeat: int = 0
    used_by: list[str] = []
    # a seed trained once into the seed cache ($HDEE_CACHE/seeds/<cache>/) and imported (seed_models.cache)
    cache: Name | None = Field(default=None, exclude_if=lambda v: v is None)


class EnsemblePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experts: list[JobId] = []  # the config's ensemble (`ensemble`: final or all)
    # both kinds from the same experts: "final" (the paper's: each lineage's last expert) and
    # "all" (BTM's forest: every expert the strategy trained)
    members: dict[str, list[JobId]] = {}
    seed_flops: float = 0.0  # in the plan's convention, like domain_flops and iteration_flops
    domain_flops: float = 0.0
    flops_by: dict[str, dict[str, float]] = {}  # {convention: {"seed": .., "domain": ..}}
    sizes_needed: list[str] = []
    iteration_flops: dict[str, float] = {}
    pending: bool = False
    decision: dict | None = None  # how the strategy chose its experts, when it measured anything (auto)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_name: str
    repeat: int = 0
    vocab: int
    flops_convention: str = "paper"  # what budget_flops, Job.flops and the equal-budget check count
    charge: str = "domain"  # what the equal-budget check matches: the domain phase, or seed models + domain phase (total)
    budget_flops: float
    budget_by: dict[str, float] = {}  # the baseline's domain phase in every convention
    jobs: list[Job]
    ensembles: dict[Name, EnsemblePlan]
    experts: dict[JobId, str]
    config_sha256: str | None = None  # the config it was made from (`ExperimentConfig.fingerprint()`), when recorded

    @property
    def pending(self) -> list[str]:
        return [name for name, e in self.ensembles.items() if e.pending]

    @property
    def complete(self) -> bool:
        return not self.pending

    def job(self, job_id: str) -> Job:
        for j in self.jobs:
            if j.id == job_id:
                return j
        raise KeyError(job_id)

    def jobs_of(self, *kinds: str) -> list[Job]:
        return [j for j in self.jobs if j.kind in kinds]

    def write(self, path: str | Path) -> None:
        atomic_write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: str | Path) -> "Plan":
        return cls.model_validate(read_json(path))


def topological(jobs: list[Job]) -> list[Job]:
    """Jobs ordered so every job follows its dependencies; PlanError on a cycle or a missing dep."""
    by_id = {j.id: j for j in jobs}
    graph: dict[str, list[str]] = {}
    for j in jobs:
        for d in j.deps:
            if d not in by_id:
                raise PlanError(f"job {j.id} depends on {d}, which is not in the plan")
        graph[j.id] = list(j.deps)
    try:
        graphlib.TopologicalSorter(graph).prepare()  # only detects cycles
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise PlanError(f"the plan has a dependency cycle: {cycle}") from None
    # stable: among jobs whose deps are met, keep creation order
    done: set[str] = set()
    out: list[Job] = []
    pending = [j.id for j in jobs]
    while pending:
        for i, job_id in enumerate(pending):
            if all(d in done for d in by_id[job_id].deps):
                out.append(by_id[job_id])
                done.add(job_id)
                del pending[i]
                break
    return out


@dataclass(frozen=True)
class EnsembleSpec:
    """One ensemble as evaluation takes it: its expert ids and what the report shows of it."""

    experts: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
