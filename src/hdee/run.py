"""A run directory read back, one way for every command and worker: its config snapshot, vocab
and plan (`Run`, `load_run`), and the plan of a config once its strategies' pilots have run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hdee.config import ExperimentConfig
from hdee.core.errors import (
    ConfigError,
    EnsembleError,
    ExecutionError,
    PlanError,
    one_line,
)
from hdee.core.fsutil import read_json
from hdee.expert_dir import is_finished, load_record
from hdee.plan import Plan, build_plan
from hdee.plan.schema import EnsembleSpec
from hdee.plan.seeds import Vary
from hdee.core.layout import RunLayout
from hdee.trust import check_plugins, config_sha256

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


@functools.lru_cache(maxsize=4)
def _validated_config(path: str, mtime_ns: int) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(read_json(path))
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: {_problem(exc)}") from None


def read_config(layout: RunLayout) -> ExperimentConfig:
    """The config a run was made with (config.json), importing its plugins on the way; cached per
    file version, so a worker running many jobs validates it once."""
    path = layout.config_snapshot
    if not path.is_file():
        raise ConfigError(f"{path}: not found (is {layout.root} a run directory? hdee run creates it)")
    return _validated_config(str(path), path.stat().st_mtime_ns)


def _problem(exc: ValueError) -> str:
    """One line for a file that does not validate (where: what) or is not JSON at all."""
    if isinstance(exc, ValidationError):
        return one_line(exc)
    return f"not valid JSON ({one_line(exc)})"


def prepared_vocab(layout: RunLayout) -> int:
    """Vocabulary size of the run's prepared tokenizer (the models' embedding rows)."""
    from hdee.data.tokenizer import vocab_size

    if not layout.tokenizer_path.is_file():
        raise ExecutionError(f"{layout.tokenizer_path}: no tokenizer; the prepare job has not run")
    return vocab_size(layout.tokenizer_path)


def resolve_vocab(cfg: ExperimentConfig, layout: RunLayout | None = None, vocab: int | None = None) -> tuple[int, str]:
    """The vocab a plan uses for embedding sizes, and where it came from.

    In order: the run's prepared tokenizer, an explicit `vocab`, the BPE size the config trains,
    a local pretrained tokenizer.json, else 128002 (Llama 3's, which the paper used). FLOPs
    count non-embedding parameters only, so the vocab never changes a budget.
    """
    if layout is not None and layout.tokenizer_path.is_file():
        return prepared_vocab(layout), f"{layout.tokenizer_path}"
    if vocab is not None:
        if vocab <= 0:
            raise PlanError(f"--vocab must be positive, got {vocab}")
        return vocab, "--vocab"
    tok = cfg.data.tokenizer
    if tok.kind == "bpe":
        return tok.vocab_size, "data.tokenizer.vocab_size"
    from hdee.data.tokenizer import vocab_size

    local = Path(str(tok.path))
    local = local / "tokenizer.json" if local.is_dir() else local
    if local.is_file() and local.suffix == ".json":
        return vocab_size(local), str(local)
    return PRETRAINED_VOCAB_DEFAULT, f"default for pretrained tokenizers ({tok.path} not prepared)"


def pilot_outputs(plan: Plan, layout: RunLayout) -> dict[str, Path] | None:
    """{pilot job id: its expert dir} once every pilot of `plan` has finished, else None."""
    dirs = {j.id: layout.expert_dir(j.id) for j in plan.jobs_of("pilot")}
    return dirs if dirs and all(is_finished(d) for d in dirs.values()) else None


def current_plan(cfg: ExperimentConfig, vocab: int, layout: RunLayout, repeat: int = 0,
                 vary: Vary = "domain-phase") -> Plan:
    """The plan of one repeat as far as the run directory can decide it: with the strategies'
    decisions once their pilots have finished there, else with those strategies pending."""
    plan = build_plan(cfg, vocab, repeat=repeat, vary=vary)
    if plan.pending and (outputs := pilot_outputs(plan, layout)) is not None:
        plan = build_plan(cfg, vocab, repeat=repeat, pilot_outputs=outputs, vary=vary)
    return plan


def read_snapshot_json(layout: RunLayout) -> dict:
    """config.json as written, not yet validated (so nothing is imported)."""
    path = layout.config_snapshot
    if not path.is_file():
        raise ConfigError(f"{path}: not found (is {layout.root} a run directory?)")
    try:
        raw = read_json(path)
    except ValueError as exc:
        raise ConfigError(f"{path}: {_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return raw


def read_config_trusted(layout: RunLayout, trust_plugins: bool = False, raw: dict | None = None) -> ExperimentConfig:
    """The config snapshot for a command that only reads the run: its plugins are imported only when
    they may be (`hdee.trust`: a run `hdee run` started here, or `trust_plugins`)."""
    raw = read_snapshot_json(layout) if raw is None else raw
    check_plugins(layout.root, layout.config_snapshot, raw, trust_plugins)
    try:
        return ExperimentConfig.model_validate(raw)
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"{layout.config_snapshot}: {_problem(exc)}") from None


def load_run(run_dir: str | Path, trust_plugins: bool = False) -> Run:
    """A finished (or running) run directory: its config snapshot and plan.json, both checked, and
    the snapshot the one the plan was made from (an edited config.json is refused, not evaluated)."""
    layout = RunLayout(run_dir)
    for p in (layout.config_snapshot, layout.plan_json):
        if not p.is_file():
            raise EnsembleError(f"{p}: not found (is {run_dir} a run directory?)")
    raw = read_snapshot_json(layout)
    try:
        plan = Plan.read(layout.plan_json)
    except (ValidationError, ValueError) as exc:
        raise EnsembleError(f"{layout.plan_json}: not a plan: {_problem(exc)}") from None
    if plan.config_sha256 is not None and plan.config_sha256 != config_sha256(raw):
        raise ConfigError(
            f"{layout.config_snapshot}: differs from the config {layout.plan_json.name} was made from (edited after the run?); "
            "restore it, or rerun `hdee run` with the new config"
        )
    return Run(read_config_trusted(layout, trust_plugins, raw), layout, plan)


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
