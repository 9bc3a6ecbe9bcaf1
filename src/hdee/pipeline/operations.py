"""The run-level operations the CLI and the pipeline share: preview a plan, evaluate one, record
how results were made, rebuild the report. Reading a run is `hdee.run`'s; the CLI only parses
arguments and prints what these return.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hdee.config import ExperimentConfig
from hdee.core.errors import ConfigError, ExecutionError, one_line
from hdee.core.fsutil import read_json
from hdee.core.provenance import environment, strategy_costs
from hdee.execute.kinds import COST_GROUPS
from hdee.expert_dir import is_finished
from hdee.plan import Plan
from hdee.plan.schema import ENSEMBLE_KINDS
from hdee.plan.seeds import Vary, check_vary
from hdee.core.layout import RunLayout
from hdee.run import (
    current_plan,
    ensemble_specs,
    expert_dirs,
    read_config_trusted,
    resolve_vocab,
)


#: config sections that change how a run executes, not what it computes
RUNTIME_SECTIONS = ("execute",)


@dataclass(frozen=True)
class PlanPreview:
    plan: Plan
    vocab: int
    vocab_source: str  # where the vocab came from (a tokenizer file, --vocab, the config, a default)


def preview_plan(cfg: ExperimentConfig, layout: RunLayout, vocab: int | None = None, repeat: int = 0,
                 vary: str = "domain-phase") -> PlanPreview:
    """The plan `hdee plan` shows: with the strategies' decisions once their pilots have run."""
    kind = check_vary(vary)
    v, source = resolve_vocab(cfg, layout, vocab)
    return PlanPreview(current_plan(cfg, v, layout, repeat, kind), v, source)


def _done_record(path: Path) -> dict[str, Any]:
    """A job's done record, with the cost `strategy_costs` adds up checked (hdee writes it;
    anything else is damage, refused in one line)."""
    fix = "delete it and rerun `hdee run` to redo the job"
    try:
        rec = read_json(path)
    except ValueError as exc:
        raise ExecutionError(f"{path}: not a done record (not valid JSON: {one_line(exc)}); {fix}") from None
    if not isinstance(rec, dict):
        raise ExecutionError(f"{path}: not a done record (not a JSON object); {fix}")
    cost = rec.get("cost")
    if cost is not None and not _valid_cost(cost):
        raise ExecutionError(f"{path}: not a done record (its cost is not seconds and GPUs); {fix}")
    return rec


def _valid_cost(cost: Any) -> bool:
    """{"seconds": s, "gpus": n, ...} with non-negative numbers (gpus may be absent)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0

    return isinstance(cost, dict) and number(cost.get("seconds")) and number(cost.get("gpus", 0))


def computing_fingerprint(cfg: ExperimentConfig) -> str:
    """The hash of every setting but how the run executes (`RUNTIME_SECTIONS`)."""
    return cfg.fingerprint(*(k for k in cfg.model_dump(mode="json") if k not in RUNTIME_SECTIONS))


def results_source(cfg: ExperimentConfig, plan: Plan) -> dict[str, str]:
    """What one repeat's results are computed from: the config (`computing_fingerprint`) and the
    plan's jobs (their ids hash every input of each job)."""
    jobs = "\n".join(sorted(j.id for j in plan.jobs)).encode()
    return {"config_sha256": computing_fingerprint(cfg), "jobs_sha256": hashlib.sha256(jobs).hexdigest()}


def kept_results(cfg: ExperimentConfig, layout: RunLayout, plan: Plan, vary: Vary = "domain-phase") -> bool:
    """Whether the repeat of `plan` has results computed from this config and this plan
    (`results_source`) and none of its jobs has run in this directory: results carried to a new
    machine without their models, which a rerun keeps, finishing only the repeats that lack them.
    Where the jobs ran, a rerun verifies their outputs and evaluates again, as always."""
    path = layout.results_path(plan.repeat, vary)
    if not path.is_file() or any(layout.done_record(j.id).exists() for j in plan.jobs if j.kind != "prepare"):
        return False
    try:
        made = read_json(path)
    except ValueError:
        return False  # damaged: evaluated again
    source = made.get("provenance", {}).get("source") if isinstance(made, dict) else None
    return source == results_source(cfg, plan)


def results_provenance(plan: Plan, layout: RunLayout, vary: Vary = "domain-phase", env: dict[str, Any] | None = None,
                       started: float | None = None, source: dict[str, str] | None = None) -> dict[str, Any]:
    """What results.json records of how it was made: `env` (`hdee.core.provenance.environment()`, taken
    now when not given), the repeat and what it varies, the costs of the plan's jobs from their done
    records, how long this invocation had run (from `started`, a `time.monotonic()` reading) and
    what the numbers were computed from (`source`, `results_source`)."""
    from hdee.report.prereg import prereg_record

    records = {}
    for job in plan.jobs:
        path = layout.done_record(job.id)
        if path.is_file():
            records[job.id] = _done_record(path)
    return {
        **(env if env is not None else environment()),
        # repeat 0 is the same experiment whatever later repeats vary
        "repeat": plan.repeat,
        "vary": vary if plan.repeat else None,
        "invocation_seconds": None if started is None else round(time.monotonic() - started, 1),
        "costs": strategy_costs(plan.jobs, records, COST_GROUPS),
        "preregistration": prereg_record(),  # the rule in force when these numbers were made (hdee.report.prereg)
        **({"source": source} if source is not None else {}),
    }


def evaluate_plan(cfg: ExperimentConfig, layout: RunLayout, plan: Plan, vary: Vary = "domain-phase",
                  env: dict[str, Any] | None = None, started: float | None = None) -> dict[str, Any]:
    """Score, mix and write the results of one repeat's plan (results path by `plan.repeat` and
    `vary`): the config's ensemble of every strategy and, from the same experts, the other kind;
    with their provenance (`results_provenance`)."""
    from hdee.evaluation.evaluate import evaluate

    alt = None
    if all(e.members for e in plan.ensembles.values()):  # plans written before both kinds were planned lack them
        other = next(k for k in ENSEMBLE_KINDS if k != cfg.ensemble)
        alt = ensemble_specs(plan, layout, other)
    dirs = expert_dirs(plan, layout)
    results = evaluate(cfg, layout, dirs, ensemble_specs(plan, layout), repeat=plan.repeat, vary=vary,
                       alt=alt, provenance=results_provenance(plan, layout, vary, env, started, results_source(cfg, plan)))
    refresh_cards(dirs, results)
    return results


def refresh_cards(dirs: dict[str, Path], results: dict[str, Any]) -> None:
    """Every evaluated model's card, rewritten with its measured test perplexities (model-index)."""
    from hdee.modelcard import refresh_card

    for eid, entry in results.get("experts", {}).items():
        if eid in dirs and is_finished(dirs[eid]):
            refresh_card(dirs[eid], entry["ppl"])


def with_methods(cfg: ExperimentConfig, methods: list[str]) -> ExperimentConfig:
    """`cfg` evaluating `methods` instead of `eval.methods` (checked like the config's own)."""
    try:
        return ExperimentConfig.model_validate({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "methods": methods}})
    except ValidationError as exc:
        raise ConfigError(f"methods {', '.join(methods)}: {one_line(exc).split(': ', 1)[-1]}") from None


def report_run(run_dir: str | Path, vary: str = "domain-phase", trust_plugins: bool = False) -> dict[str, Any]:
    """`hdee report`: rebuild the report over the repeats of kind `vary` from saved results (the
    run's plugins imported first, so their strategies' traits order and classify them)."""
    from hdee.report.write import write_report

    kind = check_vary(vary)
    layout = RunLayout(run_dir)
    if layout.config_snapshot.is_file():
        read_config_trusted(layout, trust_plugins)
    return write_report(layout, kind)
