"""The plan: strategies -> one DAG of jobs with sizes, steps, FLOPs and content-hash ids.

A job's id hashes everything that decides its output (kind, the config slice it reads, its
parents' ids, its seed), so a job several strategies share appears once and runs once, and a
rerun of the same config finds the same ids. `repeat` reseeds the domain phase only.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import math
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict

from hdee.config import ExperimentConfig
from hdee.errors import PlanError
from hdee.fsutil import atomic_write_json, read_json
from hdee.strategies import (
    ExpertSpec,
    StrategyContext,
    budget_flops,
    expert_flops,
    get_strategy,
    size_flops_per_step,
)

JobKind = Literal["prepare", "seed", "train", "pilot", "dense", "score"]
MODEL_KINDS = ("seed", "train", "pilot", "dense")


class Job(BaseModel):
    """One unit of work; `run_job` in hdee.execute.jobs turns it into a call of data/train/ensemble."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: JobKind
    deps: list[str] = []
    size: str | None = None
    steps: int | None = None
    tokens: int | None = None
    flops: float = 0.0
    domains: list[str] = []
    weights: list[float] = []
    parent: str | None = None
    seed: int | None = None
    lineage: str | None = None
    iteration: int | None = None
    expert: str | None = None
    domain: str | None = None
    repeat: int = 0
    used_by: list[str] = []


class EnsemblePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experts: list[str] = []
    seed_flops: float = 0.0
    domain_flops: float = 0.0
    sizes_needed: list[str] = []
    iteration_flops: dict[str, float] = {}
    pending: bool = False
    decision: dict | None = None  # how the strategy chose its experts, when it measured anything (auto)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config_name: str
    repeat: int = 0
    vocab: int
    budget_flops: float
    jobs: list[Job]
    ensembles: dict[str, EnsemblePlan]
    experts: dict[str, str]

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


def _hash(obj: object) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def _section(cfg: ExperimentConfig, name: str) -> object:
    return cfg.model_dump(mode="json", include={name})[name]


class _Builder:
    def __init__(self, cfg: ExperimentConfig, vocab: int, repeat: int):
        self.cfg, self.vocab, self.repeat = cfg, vocab, repeat
        self.jobs: dict[str, Job] = {}
        self.domain_seed = cfg.seed + repeat
        self.prepare = self._add(prepare_job(cfg))
        self.seeds: dict[str, Job] = {}
        self.train_common = {"train": _section(cfg, "train"), "vocab": vocab}

    def _add(self, job: Job, used_by: str | None = None) -> Job:
        job = self.jobs.setdefault(job.id, job)
        if used_by and used_by not in job.used_by:
            job.used_by.append(used_by)
        return job

    def _family(self, size: str) -> dict:
        fam = _section(self.cfg, "model")
        fam["intermediate"] = fam["intermediate"][size]
        return fam

    def seed(self, size: str, used_by: str) -> Job:
        cfg = self.cfg
        sm = cfg.seed_models
        per_step = size_flops_per_step(cfg, self.vocab, size)
        if sm.tokens is not None:
            steps = max(1, math.ceil(sm.tokens / cfg.train.batch_tokens))
        else:
            steps = max(1, round(sm.flops / per_step))
        doms = cfg.seed_domains
        key = ["seed", self.prepare.id, size, self._family(size), steps, doms, _section(cfg, "seed_models"), self.train_common, cfg.seed]
        job = Job(
            id=f"seed-{size}-{_hash(key)}",
            kind="seed",
            deps=[self.prepare.id],
            size=size,
            steps=steps,
            tokens=steps * cfg.train.batch_tokens,
            flops=steps * per_step,
            domains=doms,
            weights=[1.0 / len(doms)] * len(doms),
            seed=cfg.seed,
        )
        return self._add(job, used_by)

    def branch(self, kind: str, name: str, parent: Job, size: str, steps: int, domains: list[str], used_by: str, **extra) -> Job:
        cfg = self.cfg
        key = [kind, parent.id, size, steps, domains, _section(cfg, "budget")["schedule"], self.train_common, self.domain_seed]
        job = Job(
            id=f"{name}-{_hash(key)}",
            kind=kind,
            deps=[parent.id, self.prepare.id],
            size=size,
            steps=steps,
            tokens=steps * cfg.train.batch_tokens,
            flops=expert_flops(cfg, self.vocab, size, steps),
            domains=domains,
            weights=[1.0 / len(domains)] * len(domains),
            parent=parent.id,
            seed=self.domain_seed,
            repeat=self.repeat,
            **extra,
        )
        return self._add(job, used_by)

    def score(self, expert: Job, domain: str, used_by: str) -> Job:
        stem = expert.id.rsplit("-", 1)[0]
        key = ["score", expert.id, domain, self.prepare.id, _section(self.cfg, "eval")]
        job = Job(
            id=f"score-{stem}-{domain}-{_hash(key)}",
            kind="score",
            deps=[expert.id, self.prepare.id],
            expert=expert.id,
            domain=domain,
            repeat=self.repeat,
        )
        return self._add(job, used_by)


def prepare_job(cfg: ExperimentConfig) -> Job:
    """The data job every other job depends on (its id hashes the data and domain sections)."""
    data = _section(cfg, "data")
    data.pop("workers", None)  # how many processes tokenize does not change the shards
    return Job(id="prepare-" + _hash(["prepare", data, _section(cfg, "domains"), cfg.seed]), kind="prepare", seed=cfg.seed)


PRETRAINED_VOCAB_DEFAULT = 128002  # Meta-Llama-3 (128000 + BOS/EOS), the paper's tokenizer


def resolve_vocab(cfg: ExperimentConfig, tokenizer_path: str | Path | None = None, vocab: int | None = None) -> tuple[int, str]:
    """The vocab a plan uses for embedding sizes, and where it came from.

    In order: a prepared tokenizer file, an explicit `vocab`, the BPE size the config trains,
    a local pretrained tokenizer.json, else 128002 (Llama 3's, which the paper used). FLOPs
    count non-embedding parameters only, so the vocab never changes a budget.
    """
    if tokenizer_path is not None and Path(tokenizer_path).is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(tokenizer_path)).get_vocab_size(), f"{tokenizer_path}"
    if vocab is not None:
        if vocab <= 0:
            raise PlanError(f"--vocab must be positive, got {vocab}")
        return vocab, "--vocab"
    tok = cfg.data.tokenizer
    if tok.kind == "bpe":
        return tok.vocab_size, "data.tokenizer.vocab_size"
    local = Path(str(tok.path))
    local = local / "tokenizer.json" if local.is_dir() else local
    if local.is_file() and local.suffix == ".json":
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(local)).get_vocab_size(), str(local)
    return PRETRAINED_VOCAB_DEFAULT, f"default for pretrained tokenizers ({tok.path} not prepared)"


def _check_lineages(cfg: ExperimentConfig) -> None:
    roles = {d.name: d.role for d in cfg.domains}
    for lin in cfg.lineages:
        for dom in lin.domains:
            if dom not in roles:
                raise PlanError(f"lineage {lin.name!r} names unknown domain {dom!r}")
            if roles[dom] != "train":
                raise PlanError(f"lineage {lin.name!r} names held-out domain {dom!r}")


def build_plan(
    cfg: ExperimentConfig,
    vocab: int,
    repeat: int = 0,
    pilot_outputs: Mapping[str, str | Path] | None = None,
) -> Plan:
    """The DAG of every job the config's strategies need, with the budget checked.

    `pilot_outputs` maps pilot job ids to their finished output dirs; strategies whose pilots are
    not all there stay pending (their ensembles have `pending=True` and no experts yet).
    """
    _check_lineages(cfg)
    if not cfg.strategies:
        raise PlanError("the config names no strategy")
    b = _Builder(cfg, vocab, repeat)
    ctx = StrategyContext(cfg=cfg, vocab=vocab)
    ensembles: dict[str, EnsemblePlan] = {}
    members: dict[str, list[Job]] = {}
    for name in cfg.strategies:
        strategy = get_strategy(name, ctx)
        model_jobs: list[Job] = []
        pilot_jobs: dict[str, Job] = {}
        for p in strategy.pilots():
            parent = b.seed(p.size, name)
            job = b.branch("pilot", f"pilot-{name}-{p.name}", parent, p.size, p.steps, [p.domain], name, domain=p.domain)
            pilot_jobs[p.name] = job
            model_jobs.append(job)
        outputs = None
        if pilot_jobs and pilot_outputs is not None and all(j.id in pilot_outputs for j in pilot_jobs.values()):
            outputs = {pname: Path(pilot_outputs[j.id]) for pname, j in pilot_jobs.items()}
        specs = strategy.assign(outputs) if (outputs is not None or not pilot_jobs) else None
        if specs is None:
            if not pilot_jobs:
                raise PlanError(f"strategy {name!r} returned no experts")
            ensembles[name] = EnsemblePlan(pending=True)
            members[name] = model_jobs
            continue
        trained = _expert_jobs(b, name, specs)
        model_jobs.extend(trained)
        final = _final_experts(cfg, specs, trained)
        ensembles[name] = EnsemblePlan(experts=[j.id for j in final], decision=ctx.extras.get("decisions", {}).get(name))
        members[name] = model_jobs

    experts: dict[str, str] = {}
    for name, ens in ensembles.items():
        for expert_id in ens.experts:
            experts[expert_id] = f"experts/{expert_id}"
            for dom in cfg.eval_domains:
                b.score(b.jobs[expert_id], dom, name)
    # seed models are scored too: the report shows how far branching moved each domain
    for seed in [j for j in b.jobs.values() if j.kind == "seed"]:
        experts[seed.id] = f"experts/{seed.id}"
        for dom in cfg.eval_domains:
            b.score(seed, dom, "seeds")

    for name, ens in ensembles.items():
        sizes = sorted({j.size for j in members[name] if j.size}, key=_size_order(cfg))
        seed_jobs = [j for j in b.jobs.values() if j.kind == "seed" and name in j.used_by]
        ens.sizes_needed = sizes
        ens.seed_flops = sum(j.flops for j in seed_jobs)
        ens.domain_flops = sum(j.flops for j in members[name])
        for j in members[name]:
            if j.kind == "train" and j.iteration is not None:
                key = str(j.iteration)
                ens.iteration_flops[key] = ens.iteration_flops.get(key, 0.0) + j.flops

    budget = budget_flops(cfg, vocab)
    for name, ens in ensembles.items():
        if ens.pending:
            continue
        off = ens.domain_flops / budget - 1.0
        if abs(off) > cfg.budget.tolerance:
            raise PlanError(
                f"strategy {name!r} spends {ens.domain_flops:.3e} domain-phase FLOPs, {off:+.1%} off the baseline's "
                f"{budget:.3e} (budget.tolerance {cfg.budget.tolerance:.1%}); the budget cannot be matched"
            )
    return Plan(
        config_name=cfg.name,
        repeat=repeat,
        vocab=vocab,
        budget_flops=budget,
        jobs=topological(list(b.jobs.values())),
        ensembles=ensembles,
        experts=experts,
    )


def _size_order(cfg: ExperimentConfig):
    order = list(cfg.model.intermediate)
    return lambda s: order.index(s) if s in order else len(order)


def _expert_jobs(b: _Builder, strategy: str, specs: list[ExpertSpec]) -> list[Job]:
    """Jobs for one strategy's experts; iteration i branches from iteration i - 1 of its lineage."""
    cfg = b.cfg
    out: list[Job] = []
    last: dict[str, Job] = {}
    for spec in sorted(specs, key=lambda s: (s.iteration, s.lineage)):
        prev = last.get(spec.lineage)
        if prev is None:
            if spec.iteration != 1:
                raise PlanError(f"strategy {strategy!r}: lineage {spec.lineage!r} starts at iteration {spec.iteration}")
            parent = b.seed(spec.size, strategy)
        else:
            if prev.iteration != spec.iteration - 1:
                raise PlanError(f"strategy {strategy!r}: lineage {spec.lineage!r} skips iteration {spec.iteration - 1}")
            if prev.size != spec.size:
                raise PlanError(
                    f"strategy {strategy!r}: lineage {spec.lineage!r} changes size {prev.size} -> {spec.size}; "
                    "an expert branches from the previous one and keeps its size"
                )
            parent = prev
        for dom in spec.domains:
            if dom not in cfg.train_domains:
                raise PlanError(f"strategy {strategy!r}: expert {spec.lineage!r} trains on non-training domain {dom!r}")
        if spec.kind == "dense":
            name = f"dense-{spec.size}-{spec.steps}"
        else:
            name = f"train-{spec.lineage}-i{spec.iteration}-{spec.size}-{spec.steps}"
        job = b.branch(
            spec.kind, name, parent, spec.size, spec.steps, list(spec.domains), strategy,
            lineage=spec.lineage, iteration=spec.iteration,
        )
        last[spec.lineage] = job
        out.append(job)
    return out


def _final_experts(cfg: ExperimentConfig, specs: list[ExpertSpec], jobs: list[Job]) -> list[Job]:
    if cfg.ensemble == "all":
        return jobs
    last: dict[str, Job] = {}
    for job in jobs:
        if job.lineage not in last or job.iteration > last[job.lineage].iteration:
            last[job.lineage] = job
    return list(last.values())
