"""`run_experiment`: config snapshot -> prepare -> plan -> execute (stage by stage) -> evaluate -> report.

Every step is idempotent, so running it again after a crash (or a kill) finishes the same
experiment: finished jobs are skipped after their checksums are verified, an interrupted
training job resumes from its last checkpoint, and evaluation is recomputed from cached scores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hdee.config import ExperimentConfig
from hdee.errors import ConfigError, PlanError
from hdee.execute import fault, make_executor
from hdee.execute.base import Executor
from hdee.execute.jobs import run_vocab
from hdee.execute.view import RunView
from hdee.fsutil import atomic_write_json, clean_stale_temps, read_json
from hdee.layout import RunLayout
from hdee.plan import Job, Plan, build_plan, prepare_job

#: config sections that change how a run executes, not what it computes
RUNTIME_SECTIONS = ("execute",)


def plan_path(layout: RunLayout, repeat: int) -> Path:
    return layout.plan_json if repeat == 0 else layout.root / f"plan-repeat{repeat}.json"


def results_path(layout: RunLayout, repeat: int) -> Path:
    return layout.results_json if repeat == 0 else layout.results_dir / f"results-repeat{repeat}.json"


def snapshot_config(cfg: ExperimentConfig, layout: RunLayout, force: bool = False) -> None:
    """Write config.json; refuse a run directory made by a different config unless `force`."""
    new = cfg.model_dump(mode="json")
    path = layout.config_snapshot
    if path.is_file() and not force:
        try:
            old = read_json(path)
        except ValueError:
            old = None
        if not isinstance(old, dict):
            raise ConfigError(f"{path}: unreadable config snapshot; use --force to overwrite it")
        differs = sorted(k for k in set(old) | set(new) if k not in RUNTIME_SECTIONS and old.get(k) != new.get(k))
        if differs:
            raise ConfigError(
                f"{layout.root} was made by a different config (differs in {', '.join(differs)}); "
                "use --force to reuse it or --run-dir for a new one"
            )
        if old == new:
            return
    atomic_write_json(path, new)


def _stage_plans(cfg: ExperimentConfig, vocab: int, repeat: int, pilot_outputs: dict[str, Path]) -> Plan:
    return build_plan(cfg, vocab, repeat=repeat, pilot_outputs=pilot_outputs or None)


def _measured_val_losses(plan: Plan, layout: RunLayout, strategy: str) -> dict[str, float]:
    """Each of a strategy's experts' final validation loss on its own domain (from its hdee.json)."""
    out = {}
    for job in plan.jobs_of("train"):
        if strategy in job.used_by and len(job.domains) == 1:
            out[job.domains[0]] = read_json(layout.expert_dir(job.id) / "hdee.json")["final_val_loss"]
    return out


def _execute(executor: Executor, view: RunView, jobs: list[Job], stage: str) -> int:
    view.add_jobs(jobs, stage)
    return len(executor.run(jobs, on_event=view))


def run_experiment(
    cfg: ExperimentConfig,
    layout: RunLayout,
    backend: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    seeds: int = 1,
    force: bool = False,
    view: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run (or finish) the whole experiment of `cfg` in `layout`; returns a summary dict.

    `seeds` repeats the domain phase with repeats 0..seeds-1 (seed models and data are shared);
    repeat 0 writes results/results.json and plan.json, repeat k results/results-repeat<k>.json
    and plan-repeat<k>.json, which is where `hdee report` looks for them.
    """
    from hdee.evaluate import EnsembleSpec, evaluate
    from hdee.report import write_report

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    t0 = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    snapshot_config(cfg, layout, force)
    for d in (layout.root, layout.experts_dir, layout.root / "jobs"):
        clean_stale_temps(d)

    ran = 0
    summary: dict[str, Any] = {"run_dir": str(layout.root), "plans": [], "results": []}
    with RunView(console=console, live=view, title=cfg.name) as live, make_executor(
        cfg, layout.root, backend=backend, address=address, workers=workers
    ) as executor:
        ran += _execute(executor, live, [prepare_job(cfg)], "prepare")
        vocab = run_vocab(layout)
        for repeat in range(seeds):
            pilot_outputs: dict[str, Path] = {}
            stage = 1
            while True:
                plan = _stage_plans(cfg, vocab, repeat, pilot_outputs)
                plan.write(plan_path(layout, repeat))
                ran += _execute(executor, live, plan.jobs, f"{cfg.name} repeat {repeat} stage {stage}")
                if plan.complete:
                    break
                if pilot_outputs:
                    raise PlanError(f"strategies {', '.join(plan.pending)} stay pending after their pilot jobs ran")
                pilot_outputs = {j.id: layout.expert_dir(j.id) for j in plan.jobs_of("pilot")}
                stage += 1
            experts = {eid: layout.root / rel for eid, rel in plan.experts.items()}
            ensembles = {
                name: EnsembleSpec(
                    experts=list(e.experts),
                    meta={
                        "seed_flops": e.seed_flops,
                        "domain_flops": e.domain_flops,
                        "sizes_needed": list(e.sizes_needed),
                        "repeat": repeat,
                        **(
                            {"allocation": e.decision, "measured_val_loss": _measured_val_losses(plan, layout, name)}
                            if e.decision
                            else {}
                        ),
                    },
                )
                for name, e in plan.ensembles.items()
            }
            live.add_jobs([], f"{cfg.name} repeat {repeat}: evaluating")
            trap = fault.arm("evaluate", layout.root)
            evaluate(cfg, layout, experts, ensembles, results_path=results_path(layout, repeat))
            trap.before_record()
            summary["plans"].append(str(plan_path(layout, repeat)))
            summary["results"].append(str(results_path(layout, repeat)))
    summary["comparison"] = write_report(layout)
    summary["jobs_run"] = ran
    summary["report"] = str(layout.root / "report.md")
    summary["seconds"] = round(time.monotonic() - t0, 1)
    return summary
