"""The plan builder: strategies -> one DAG of jobs with sizes, steps, FLOPs and content-hash ids.

A job's id hashes everything that decides its output and nothing else (kind, the data it reads,
its parents' ids, size, schedule, steps, seed: `hdee.plan.keys`), so a job several strategies share
appears once and runs once, a rerun finds the same ids, and a config that only adds held-out
domains, strategies or evaluation settings reuses every trained model. `repeat` reseeds the
domain phase, and with `vary="seed-models"` the seed models too (hdee.plan.seeds).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

from hdee.budget import CONVENTIONS, budget_flops, expert_flops, seed_flops, seed_steps, size_flops_per_step
from hdee.config import ExperimentConfig, check_lineages
from hdee.core.errors import PlanError
from hdee.plan.keys import data_key, score_key, train_key
from hdee.core.layout import RunLayout
from hdee.plan.schema import EnsemblePlan, Job, Plan, topological
from hdee.plan.seeds import Vary, check_vary, domain_phase_seed, seed_model_seed
from hdee.strategies import Assignment, ExpertSpec, StrategyContext, get_strategy


def _hash(obj: object, length: int = 8) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _section(cfg: ExperimentConfig, name: str) -> object:
    return cfg.model_dump(mode="json", include={name})[name]


class _Builder:
    def __init__(self, cfg: ExperimentConfig, vocab: int, repeat: int, vary: Vary):
        self.cfg, self.vocab, self.repeat = cfg, vocab, repeat
        self.jobs: dict[str, Job] = {}
        self.seed_model_seed = seed_model_seed(cfg.seed, repeat, vary)
        self.prepare = self._add(prepare_job(cfg))
        self.seeds: dict[str, Job] = {}
        self.train_common = train_key(cfg)

    def _add(self, job: Job, used_by: str | None = None) -> Job:
        job = self.jobs.setdefault(job.id, job)
        if used_by and used_by not in job.used_by:
            job.used_by.append(used_by)
        return job

    def _flops_by(self, size: str, steps: int) -> dict[str, float]:
        return {c: expert_flops(self.cfg, self.vocab, size, steps, c) for c in CONVENTIONS}

    def _family(self, size: str) -> dict:
        fam = _section(self.cfg, "model")
        fam["intermediate"] = fam["intermediate"][size]
        return fam

    def seed(self, size: str, used_by: str) -> Job:
        cfg = self.cfg
        sm = cfg.seed_models
        if sm.from_ is not None:
            return self._add(self.imported_seed(size), used_by)
        per_step = size_flops_per_step(cfg, self.vocab, size)
        steps = seed_steps(cfg, self.vocab, size)
        doms = cfg.seed_domains
        settings = _section(cfg, "seed_models")
        settings.pop("cache", None)  # where the seed is kept does not change its weights
        key = ["seed", size, self._family(size), steps, data_key(cfg, doms), settings, self.train_common,
               self.seed_model_seed]
        # a cached seed's entry is named by the hash of what decides its weights, the same for every run
        cache = f"{size}-{_hash(key, 16)}" if sm.cache else None
        job = Job(
            id=f"seed-{size}-{_hash(key + ['cached'] if cache else key)}",
            cache=cache,
            kind="seed",
            deps=[self.prepare.id],
            size=size,
            steps=steps,
            tokens=steps * cfg.train.batch_tokens,
            flops=steps * per_step,
            flops_by=self._flops_by(size, steps),
            domains=doms,
            weights=[1.0 / len(doms)] * len(doms),
            seed=self.seed_model_seed,
        )
        return self._add(job, used_by)

    def imported_seed(self, size: str) -> Job:
        """A seed taken from an existing checkpoint: no training, no FLOPs."""
        from hdee.model import size_spec  # reads the checkpoint's config: only for configs that import seeds

        cfg = self.cfg
        source = cfg.seed_models.from_[size]
        spec = size_spec(cfg, size, self.vocab)
        doms = cfg.seed_domains
        key = ["seed-from", size, source, spec.model_dump(mode="json"), data_key(cfg, doms), self.train_common]
        return Job(id=f"seed-{size}-{_hash(key)}", kind="seed", deps=[self.prepare.id], size=size, steps=0, tokens=0,
                   flops=0.0, flops_by={c: 0.0 for c in CONVENTIONS}, domains=doms, weights=[1.0 / len(doms)] * len(doms),
                   seed=cfg.seed)

    def branch(self, kind: str, name: str, parent: Job, size: str, steps: int, domains: list[str], used_by: str, **extra) -> Job:
        cfg = self.cfg
        seed = domain_phase_seed(cfg.seed, self.repeat, kind, domains)
        key = [kind, parent.id, size, steps, data_key(cfg, domains), _section(cfg, "budget")["schedule"], self.train_common,
               seed]
        job = Job(
            id=f"{name}-{_hash(key)}",
            kind=kind,
            deps=[parent.id, self.prepare.id],
            size=size,
            steps=steps,
            tokens=steps * cfg.train.batch_tokens,
            flops=expert_flops(cfg, self.vocab, size, steps),
            flops_by=self._flops_by(size, steps),
            domains=domains,
            weights=[1.0 / len(domains)] * len(domains),
            parent=parent.id,
            seed=seed,
            repeat=self.repeat,
            **extra,
        )
        return self._add(job, used_by)

    def score(self, expert: Job, used_by: str) -> Job:
        """One job per expert for every eval domain: the model is loaded once, not once per domain."""
        stem = expert.id.rsplit("-", 1)[0]
        domains = self.cfg.eval_domains
        key = ["score", expert.id, data_key(self.cfg, domains), score_key(self.cfg)]
        job = Job(
            id=f"score-{stem}-{_hash(key)}",
            kind="score",
            deps=[expert.id, self.prepare.id],
            expert=expert.id,
            domains=domains,
            repeat=self.repeat,
        )
        return self._add(job, used_by)


def prepare_job(cfg: ExperimentConfig) -> Job:
    """The data job every other job depends on (its id hashes the data and domain sections)."""
    data = _section(cfg, "data")
    data.pop("workers", None)  # how many processes tokenize does not change the shards
    return Job(id="prepare-" + _hash(["prepare", data, _section(cfg, "domains"), cfg.seed]), kind="prepare", seed=cfg.seed)


def build_plan(
    cfg: ExperimentConfig,
    vocab: int,
    repeat: int = 0,
    pilot_outputs: Mapping[str, str | Path] | None = None,
    vary: Vary = "domain-phase",
) -> Plan:
    """The DAG of every job the config's strategies need, with the budget checked.

    Repeat `repeat` > 0 retrains the domain phase with other window orders, and with
    `vary="seed-models"` first the seed models with other initial weights (hdee.plan.seeds).

    `pilot_outputs` maps pilot job ids to their finished output dirs; strategies whose pilots are
    not all there stay pending (their ensembles have `pending=True` and no experts yet).
    """
    try:
        check_lineages(cfg)  # a config built in code (model_copy) skipped validation
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    if not cfg.strategies:
        raise PlanError("the config names no strategy")
    check_vary(vary, imported_seeds=repeat > 0 and cfg.seed_models.from_ is not None)
    b = _Builder(cfg, vocab, repeat, vary)
    ctx = StrategyContext(cfg=cfg, vocab=vocab)
    ensembles: dict[str, EnsemblePlan] = {}
    members: dict[str, list[Job]] = {}
    for name in cfg.strategies:
        strategy = get_strategy(name, ctx)
        model_jobs: list[Job] = []
        pilot_jobs: dict[str, Job] = {}
        for p in strategy.pilots():
            parent = b.seed(p.size, name)
            job = b.branch("pilot", f"pilot-{p.name}" if p.shared else f"pilot-{name}-{p.name}", parent, p.size, p.steps, [p.domain], name, domain=p.domain)
            pilot_jobs[p.name] = job
            model_jobs.append(job)
        outputs = None
        if pilot_jobs and pilot_outputs is not None and all(j.id in pilot_outputs for j in pilot_jobs.values()):
            outputs = {pname: Path(pilot_outputs[j.id]) for pname, j in pilot_jobs.items()}
        assignment = strategy.assign(outputs) if (outputs is not None or not pilot_jobs) else None
        if assignment is not None and not isinstance(assignment, Assignment):
            raise PlanError(f"strategy {name!r}: assign() returned {type(assignment).__name__}, not an Assignment")
        if assignment is None:
            if not pilot_jobs:
                raise PlanError(f"strategy {name!r} returned no experts")
            ensembles[name] = EnsemblePlan(pending=True)
            members[name] = model_jobs
            continue
        trained = _expert_jobs(b, name, assignment.experts)
        model_jobs.extend(trained)
        kinds = {"final": [j.id for j in _final_experts(trained)], "all": [j.id for j in trained]}
        ensembles[name] = EnsemblePlan(experts=kinds[cfg.ensemble], members=kinds, decision=assignment.decision)
        members[name] = model_jobs

    experts: dict[str, str] = {}
    for name, ens in ensembles.items():
        # every expert of both kinds, so the final ensemble and the forest compare the same experts
        for expert_id in dict.fromkeys(e for kind in ens.members.values() for e in kind):
            experts[expert_id] = RunLayout.expert_rel(expert_id)
            b.score(b.jobs[expert_id], name)
    # seed models are scored too: the report shows how far branching moved each domain
    for seed in [j for j in b.jobs.values() if j.kind == "seed"]:
        experts[seed.id] = RunLayout.expert_rel(seed.id)
        b.score(seed, "seeds")

    for name, ens in ensembles.items():
        sizes = sorted({j.size for j in members[name] if j.size}, key=_size_order(cfg))
        seed_jobs = [j for j in b.jobs.values() if j.kind == "seed" and name in j.used_by]
        ens.sizes_needed = sizes
        ens.seed_flops = sum(j.flops for j in seed_jobs)
        ens.domain_flops = sum(j.flops for j in members[name])
        ens.flops_by = {
            c: {"seed": sum(j.flops_by[c] for j in seed_jobs), "domain": sum(j.flops_by[c] for j in members[name])}
            for c in CONVENTIONS
        }
        for j in members[name]:
            if j.kind == "train" and j.iteration is not None:
                key = str(j.iteration)
                ens.iteration_flops[key] = ens.iteration_flops.get(key, 0.0) + j.flops

    budget = budget_flops(cfg, vocab)
    total = cfg.budget.charge == "total"  # then seeds count: each strategy against the baseline's seed + domain phase
    limit = budget + (seed_flops(cfg, vocab, [cfg.budget.baseline.size]) if total else 0.0)
    for name, ens in ensembles.items():
        if ens.pending:
            continue
        off = (ens.domain_flops + (ens.seed_flops if total else 0.0)) / limit - 1.0
        if abs(off) > cfg.budget.tolerance:
            raise PlanError(
                f"strategy {name!r} spends {ens.domain_flops:.3e} domain-phase FLOPs ({cfg.budget.flops} count), "
                f"{'with its seed models ' if total else ''}{off:+.1%} off the baseline's {limit:.3e} (budget.tolerance {cfg.budget.tolerance:.1%}); "
                "the budget cannot be matched"
            )
    return Plan(
        config_name=cfg.name,
        repeat=repeat,
        vocab=vocab,
        flops_convention=cfg.budget.flops,
        charge=cfg.budget.charge,
        budget_flops=budget,
        budget_by={c: budget_flops(cfg, vocab, c) for c in CONVENTIONS},
        jobs=topological(list(b.jobs.values())),
        ensembles=ensembles,
        experts=experts,
    )


def _size_order(cfg: ExperimentConfig):
    order = cfg.size_names
    return lambda s: order.index(s) if s in order else len(order)


def _expert_jobs(b: _Builder, strategy: str, specs: list[ExpertSpec]) -> list[Job]:
    """Jobs for one strategy's experts; iteration i branches from iteration i - 1 of its lineage."""
    cfg = b.cfg
    out: list[Job] = []
    last: dict[str, Job] = {}
    for spec in sorted(specs, key=lambda s: (s.iteration, s.lineage)):
        prev = last.get(spec.lineage)
        if spec.from_seed:
            parent = b.seed(spec.size, strategy)
        elif prev is None:
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


def _final_experts(jobs: list[Job]) -> list[Job]:
    """The experts nothing branches from: each lineage's last expert (the paper's ensemble), and
    every expert of a strategy whose experts all branch from their seed."""
    parents = {j.parent for j in jobs}
    return [j for j in jobs if j.id not in parents]
