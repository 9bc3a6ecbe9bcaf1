"""The sections of an experiment config that say how its experts are evaluated and its jobs run:
eval, routing, execute (with Slurm's settings)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hdee.config.sections import Strict
from hdee.registry import MIXING_METHODS, ROUTERS


class EvalConfig(Strict):
    methods: list[str] = Field(
        default_factory=MIXING_METHODS.builtin_names, description="default: the built-in methods; a plugin's are named here"
    )
    method: str | None = Field(
        default=None,
        description="the main table's mixing method, fixed beforehand; default: chosen on validation windows "
        "disjoint from the prior's (lowest mean log-perplexity)",
    )
    max_tokens: int | None = Field(default=None, gt=0, description="per domain and split")
    batch_size: int = Field(default=8, gt=0)
    prior_sequences: int = Field(default=100, gt=0, description="val windows the cached prior is estimated on (the first ones)")
    select_sequences: int = Field(
        default=32, gt=0, description="val windows after the prior's that choose the main table's method"
    )
    prior_alpha: float = Field(default=0.3, gt=0, le=1)
    top_k: int = Field(default=2, gt=0)
    product_windows: int = Field(default=8, gt=0)

    @model_validator(mode="after")
    def _known_methods(self) -> "EvalConfig":
        unknown = [m for m in self.methods if m not in MIXING_METHODS]
        if unknown:
            raise ValueError(f"unknown mixing method {unknown[0]!r}; known: {', '.join(MIXING_METHODS.names())}")
        if self.method is not None:
            if self.method not in self.methods:
                raise ValueError(f"eval.method {self.method!r} is not in eval.methods")
            if not MIXING_METHODS.get(self.method).candidate_default:
                raise ValueError(
                    f"eval.method {self.method!r} cannot be the main method: it is a test-set oracle or scored on a subset of windows"
                )
        return self


FRONT_METHODS = ["routed-top1", "routed-top2", "routed-prev-top1", "routed-prev-top2", "routed-soft-top2", "routed-prev-soft-top2"]


class FrontConfig(Strict):
    """The routing front (`hdee.evaluation.routing_front`): every router kind x route tokens x
    routed method, perplexity against inference FLOPs, and the routed method chosen on validation."""

    routers: list[str] = Field(default_factory=list, description="router kinds to sweep; empty: no front")
    route_tokens: list[int] = Field(default_factory=list, description="prefix lengths to sweep (default: the run's route_tokens)")
    context_tokens: list[int] = Field(
        default_factory=list, description="previous-context lengths to sweep for routed-prev-* (default: the run's context_tokens)"
    )
    methods: list[str] = Field(default_factory=lambda: list(FRONT_METHODS), description="routed methods to sweep")
    strategies: list[str] | None = Field(default=None, description="whose ensembles (default: every one of more than one expert)")
    reference: str = Field(default="cached-prior", description="the all-expert method the front is measured against")

    @field_validator("routers")
    @classmethod
    def _registered_routers(cls, value: list[str]) -> list[str]:
        unknown = [r for r in value if r not in ROUTERS]
        if unknown:
            raise ValueError(f"unknown router kind {unknown[0]!r}; known: {', '.join(ROUTERS.names())}")
        return value

    @field_validator("route_tokens", "context_tokens")
    @classmethod
    def _positive(cls, value: list[int], info: Any) -> list[int]:
        if any(r < 1 for r in value):
            raise ValueError(f"routing.front.{info.field_name} must be positive")
        return value

    @field_validator("methods")
    @classmethod
    def _routed_methods(cls, value: list[str]) -> list[str]:
        for m in value:
            entry = MIXING_METHODS.find(m)
            if entry is None or not entry.routed:
                raise ValueError(f"routing.front.methods: {m!r} is not a routed method (routed-[prev-][soft-]top<k>)")
        return value


class RoutingConfig(Strict):
    """The routed methods (`routed-top<k>`): a router reads each window's first `route_tokens`
    tokens, which the prefix model scores, and picks the k experts that score the rest."""

    router: str = Field(
        default="tfidf", description="a registered router kind: tfidf (nearest centroid), hidden (the prefix model's mean hidden state), bigram (a router LM per expert), or a plugin's"
    )
    route_tokens: int | None = Field(default=None, gt=0, description="default: data.seq_len // 4 (at least 1)")
    prefix_model: str | None = Field(
        default=None, description="size of the seed model that scores the prefix (default: the cheapest seed)"
    )
    train_windows: int = Field(default=256, gt=0, description="windows of each expert's train split a router reads")
    context_tokens: int | None = Field(
        default=None, gt=0, description="routed-prev-*: route on at most this many tokens before the window (default: the whole previous window)"
    )
    front: FrontConfig = FrontConfig()

    @field_validator("router")
    @classmethod
    def _registered_router(cls, value: str) -> str:
        if value not in ROUTERS:
            raise ValueError(f"unknown router kind {value!r}; known: {', '.join(ROUTERS.names())}")
        return value


class SlurmConfig(Strict):
    """`--backend slurm`: every job is one submitit job (README, "Slurm")."""

    cluster: Literal["slurm", "local"] = Field(default="slurm", description="submitit's executor: Slurm, or processes on this machine")
    partition: str | None = None
    account: str | None = None
    time_min: int = Field(default=240, gt=0, description="wall-time limit of one job; one cut off resumes when requeued")
    mem_gb: float | None = Field(default=None, gt=0)
    max_parallel: int = Field(default=64, gt=0, description="jobs queued or running at once")
    extra: dict[str, str] = Field(default_factory=dict, description="further sbatch options, e.g. {qos = \"normal\"}")


class ExecuteConfig(Strict):
    backend: Literal["local", "ray", "slurm"] = "local"
    workers: int | None = Field(default=None, gt=0)
    threads_per_worker: int = Field(default=1, gt=0)
    ray_address: str | None = None
    gpus_per_job: float = Field(default=0, ge=0, description="GPUs of one Ray or Slurm job: 1, or below 1 to share one (Ray)")
    workers_per_gpu: int = Field(default=1, gt=0, description="local workers per visible GPU, unless workers is set")
    slurm: SlurmConfig = SlurmConfig()

    @model_validator(mode="after")
    def _at_most_one_gpu(self) -> "ExecuteConfig":
        if self.gpus_per_job > 1:  # a job is one process on one device: more would sit idle, counted as used
            raise ValueError(
                f"gpus_per_job {self.gpus_per_job:g}: a job trains in one process on one GPU, so at most 1 "
                "(one expert trains data-parallel on several GPUs with torchrun -m hdee.train.distributed)"
            )
        return self
