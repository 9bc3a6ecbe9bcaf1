"""The run-level operations the CLI and the pipeline share: one way to read a run, preview its
plan, and say what each ensemble is. The CLI only parses arguments and prints their results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hdee.config import ExperimentConfig
from hdee.data.tokenizer import vocab_size
from hdee.errors import ConfigError, EnsembleError, PlanError
from hdee.evaluate import ENSEMBLE_KINDS, EnsembleSpec, evaluate
from hdee.expert_dir import is_finished, load_record
from hdee.fsutil import read_json
from hdee.layout import RunLayout
from hdee.plan import Plan, build_plan
from hdee.prereg import prereg_record
from hdee.provenance import environment, strategy_costs
from hdee.seeds import Vary, check_vary

PRETRAINED_VOCAB_DEFAULT = 128002  # Meta-Llama-3 (128000 + BOS/EOS), the paper's tokenizer


@dataclass(frozen=True)
class Run:
    """A run directory read back: its config snapshot, layout and (repeat 0) plan."""

    cfg: ExperimentConfig
    layout: RunLayout
    plan: Plan

    @cached_property
    def experts(self) -> dict[str, Path]:
        """Every model the plan scores (ensemble members and seed models) -> its directory."""
        return expert_dirs(self.plan, self.layout)

    @cached_property
    def ensembles(self) -> dict[str, EnsembleSpec]:
        """Each strategy's ensemble of the config's kind (`cfg.ensemble`), as evaluation takes it."""
        return ensemble_specs(self.plan, self.layout)

    def ensemble_dirs(self, strategy: str) -> list[Path]:
        """The model directories of one strategy's ensemble."""
        if strategy not in self.ensembles:
            raise EnsembleError(f"{self.layout.plan_json}: no strategy {strategy!r} (has: {', '.join(self.ensembles)})")
        return [self.experts[e] for e in self.ensembles[strategy].experts]


@dataclass(frozen=True)
class PlanPreview:
    plan: Plan
    vocab: int
    vocab_source: str  # where the vocab came from (a tokenizer file, --vocab, the config, a default)


def resolve_vocab(cfg: ExperimentConfig, tokenizer_path: str | Path | None = None, vocab: int | None = None) -> tuple[int, str]:
    """The vocab a plan uses for embedding sizes, and where it came from.

    In order: a prepared tokenizer file, an explicit `vocab`, the BPE size the config trains,
    a local pretrained tokenizer.json, else 128002 (Llama 3's, which the paper used). FLOPs
    count non-embedding parameters only, so the vocab never changes a budget.
    """
    if tokenizer_path is not None and Path(tokenizer_path).is_file():
        return vocab_size(tokenizer_path), f"{tokenizer_path}"
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
        return vocab_size(local), str(local)
    return PRETRAINED_VOCAB_DEFAULT, f"default for pretrained tokenizers ({tok.path} not prepared)"


def pilot_outputs(plan: Plan, layout: RunLayout) -> dict[str, Path] | None:
    """{pilot job id: its expert dir} once every pilot of `plan` has finished, else None."""
    dirs = {j.id: layout.expert_dir(j.id) for j in plan.jobs_of("pilot")}
    return dirs if dirs and all(is_finished(d) for d in dirs.values()) else None


def preview_plan(cfg: ExperimentConfig, layout: RunLayout, vocab: int | None = None, repeat: int = 0,
                 vary: str = "domain-phase") -> PlanPreview:
    """The plan `hdee plan` shows: with the strategies' decisions once their pilots have run."""
    kind = check_vary(vary)
    v, source = resolve_vocab(cfg, layout.tokenizer_path, vocab)
    plan = build_plan(cfg, v, repeat=repeat, vary=kind)
    if plan.pending and (outputs := pilot_outputs(plan, layout)) is not None:
        plan = build_plan(cfg, v, repeat=repeat, pilot_outputs=outputs, vary=kind)
    return PlanPreview(plan, v, source)


def read_config_snapshot(layout: RunLayout) -> ExperimentConfig:
    """The config a run was made with (config.json); importing its plugins on the way."""
    path = layout.config_snapshot
    if not path.is_file():
        raise ConfigError(f"{path}: not found (is {layout.root} a run directory?)")
    try:
        return ExperimentConfig.model_validate(read_json(path))
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: {_first_problem(exc)}") from None


def _first_problem(exc: ValueError) -> str:
    """One line for a snapshot that does not validate (where: what) or is not JSON at all."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = list(first["loc"])
        if loc[-1:] == ["[key]"]:  # a bad mapping key: the message names it
            loc = loc[:-2]
        where = ".".join(str(p) for p in loc)
        msg = first["msg"].removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return f"not valid JSON ({(str(exc).splitlines() or [type(exc).__name__])[0]})"


def load_run(run_dir: str | Path) -> Run:
    """A finished (or running) run directory: its config snapshot and plan.json, both checked."""
    layout = RunLayout(run_dir)
    for p in (layout.config_snapshot, layout.plan_json):
        if not p.is_file():
            raise EnsembleError(f"{p}: not found (is {run_dir} a run directory?)")
    cfg = read_config_snapshot(layout)
    try:
        plan = Plan.read(layout.plan_json)
    except (ValidationError, ValueError) as exc:
        raise EnsembleError(f"{layout.plan_json}: not a plan: {_first_problem(exc)}") from None
    return Run(cfg, layout, plan)


def expert_dirs(plan: Plan, layout: RunLayout) -> dict[str, Path]:
    """Every expert a plan scores (ensemble members and seed models) -> its directory."""
    return {eid: (Path(d) if Path(d).is_absolute() else layout.root / d) for eid, d in plan.experts.items()}


def _measured_val_losses(plan: Plan, layout: RunLayout, strategy: str) -> dict[str, float | None]:
    """Each of a strategy's experts' final validation loss on its own domain (from its record)."""
    out = {}
    for job in plan.jobs_of("train"):
        if strategy in job.used_by and len(job.domains) == 1:
            out[job.domains[0]] = load_record(layout.expert_dir(job.id)).final_val_loss
    return out


def ensemble_specs(plan: Plan, layout: RunLayout, kind: str | None = None) -> dict[str, EnsembleSpec]:
    """What evaluation needs of each strategy's ensemble: its experts and the metadata the report
    shows (FLOPs in both counts, sizes, the repeat, and the strategy's decision with the losses it
    led to). `kind` ("final" or "all") picks the members; default: the config's ensemble."""
    specs = {}
    for name, e in plan.ensembles.items():
        meta: dict[str, Any] = {
            "seed_flops": e.seed_flops,
            "domain_flops": e.domain_flops,
            "flops_convention": plan.flops_convention,
            "flops_by": e.flops_by,
            "sizes_needed": list(e.sizes_needed),
            "repeat": plan.repeat,
            "seeds": [j.id for j in plan.jobs if j.kind == "seed" and name in j.used_by],
            **({"charge": "total"} if plan.charge == "total" else {}),  # budgets matched with the seed models counted
        }
        if e.decision:
            meta["decision"] = e.decision
            meta["measured_val_loss"] = _measured_val_losses(plan, layout, name)
        specs[name] = EnsembleSpec(experts=list(e.members[kind] if kind else e.experts), meta=meta)
    return specs


def results_provenance(plan: Plan, layout: RunLayout, vary: Vary = "domain-phase", env: dict[str, Any] | None = None,
                       started: float | None = None) -> dict[str, Any]:
    """What results.json records of how it was made: `env` (`hdee.provenance.environment()`, taken
    now when not given), the repeat and what it varies, the costs of the plan's jobs from their done
    records, and how long this invocation had run (from `started`, a `time.monotonic()` reading)."""
    records = {}
    for job in plan.jobs:
        path = layout.job_record(job.id)
        if path.is_file():
            records[job.id] = read_json(path)
    return {
        **(env if env is not None else environment()),
        # repeat 0 is the same experiment whatever later repeats vary
        "repeat": plan.repeat,
        "vary": vary if plan.repeat else None,
        "invocation_seconds": None if started is None else round(time.monotonic() - started, 1),
        "costs": strategy_costs(plan.jobs, records),
        "preregistration": prereg_record(),  # the rule in force when these numbers were made (hdee.prereg)
    }


def evaluate_plan(cfg: ExperimentConfig, layout: RunLayout, plan: Plan, vary: Vary = "domain-phase",
                  env: dict[str, Any] | None = None, started: float | None = None) -> dict[str, Any]:
    """Score, mix and write the results of one repeat's plan (results path by `plan.repeat` and
    `vary`): the config's ensemble of every strategy and, from the same experts, the other kind;
    with their provenance (`results_provenance`)."""
    alt = None
    if all(e.members for e in plan.ensembles.values()):  # plans written before both kinds were planned lack them
        other = next(k for k in ENSEMBLE_KINDS if k != cfg.ensemble)
        alt = ensemble_specs(plan, layout, other)
    return evaluate(cfg, layout, expert_dirs(plan, layout), ensemble_specs(plan, layout), repeat=plan.repeat, vary=vary,
                    alt=alt, provenance=results_provenance(plan, layout, vary, env, started))


def with_methods(cfg: ExperimentConfig, methods: list[str]) -> ExperimentConfig:
    """`cfg` evaluating `methods` instead of `eval.methods` (checked like the config's own)."""
    try:
        return ExperimentConfig.model_validate({**cfg.model_dump(), "eval": {**cfg.eval.model_dump(), "methods": methods}})
    except ValidationError as exc:
        raise ConfigError(f"methods {', '.join(methods)}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def report_run(run_dir: str | Path, vary: str = "domain-phase") -> dict[str, Any]:
    """`hdee report`: rebuild the report over the repeats of kind `vary` from saved results (the
    run's plugins imported first, so their strategies' traits order and classify them)."""
    from hdee.report import write_report

    kind = check_vary(vary)
    layout = RunLayout(run_dir)
    if layout.config_snapshot.is_file():
        read_config_snapshot(layout)
    return write_report(layout, kind)
