"""`run_experiment`: config snapshot -> prepare -> plan -> execute (stage by stage) -> evaluate -> report.

Every step is idempotent, so running it again after a crash (or a kill) finishes the same
experiment: finished jobs are skipped after their checksums are verified, an interrupted
training job resumes from its last checkpoint, and evaluation is recomputed from cached scores.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from hdee.config import ExperimentConfig
from hdee.core.errors import ConfigError, HdeeError, PlanError
from hdee.core.fsutil import atomic_write_json, clean_stale_temps, read_json
from hdee.core.provenance import environment
from hdee.execute import fault, make_executor
from hdee.execute.base import Executor
from hdee.execute.kinds import MODEL_KINDS
from hdee.execute.view import RunView
from hdee.expert_dir import is_finished
from hdee.evaluation.pilot import pilot_evaluate, pilot_summary
from hdee.pipeline.operations import RUNTIME_SECTIONS, evaluate_plan, kept_results
from hdee.plan import Job, prepare_job
from hdee.plan.seeds import Vary, check_vary
from hdee.report.compare import load_repeats
from hdee.report.write import write_report
from hdee.core.layout import RunLayout
from hdee.run import current_plan, ensemble_specs, expert_dirs, prepared_vocab, resolve_vocab
from hdee.trust import remember_run

def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the settings that differ; domains by name (+added, -removed, ~changed)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b or (not prefix and key in RUNTIME_SECTIONS):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif key == "domains" and not prefix and isinstance(a, list) and isinstance(b, list):
            was, now = {d.get("name"): d for d in a}, {d.get("name"): d for d in b}
            out += [f"domains +{n}" for n in now if n not in was] + [f"domains -{n}" for n in was if n not in now]
            out += [f"domains ~{n}" for n in now if n in was and now[n] != was[n]]
            if not out and [d.get("name") for d in a] != [d.get("name") for d in b]:
                out.append("domains (order)")
        else:
            out.append(f"{prefix}{key}")
    return out


def trained_not_reused(cfg: ExperimentConfig, layout: RunLayout) -> tuple[int, int] | None:
    """(trained models in `layout` that `cfg`'s plans no longer contain, trained models), or None when unknown."""
    trained = {d.name for d in layout.experts_dir.glob("*") if is_finished(d)}
    if not trained:
        return 0, 0
    repeats = 1
    while layout.plan_path(repeats).is_file():
        repeats += 1
    wanted: set[str] = set()
    try:
        vocab, _ = resolve_vocab(cfg, layout)
        for repeat in range(repeats):
            plan = current_plan(cfg, vocab, layout, repeat)
            wanted |= {j.id for j in plan.jobs_of(*MODEL_KINDS)}
    except HdeeError:
        return None
    return len(trained - wanted), len(trained)


def snapshot_config(cfg: ExperimentConfig, layout: RunLayout, force: bool = False) -> None:
    """Write config.json; refuse a run directory made by a different config unless `force`.

    The refusal names the settings that differ and says whether models already trained there
    would be reused (job ids hash only each job's real inputs).
    """
    new = cfg.model_dump(mode="json")
    path = layout.config_snapshot
    if path.is_file() and not force:
        try:
            old = read_json(path)
        except ValueError:
            old = None
        if not isinstance(old, dict):
            raise ConfigError(f"{path}: unreadable config snapshot; use --force to overwrite it")
        differs = config_diff(old, new)
        if differs:
            shown = ", ".join(differs[:8]) + (f", and {len(differs) - 8} more" if len(differs) > 8 else "")
            impact = trained_not_reused(cfg, layout)
            if impact is None:
                effect = ""
            elif impact[1] == 0:
                effect = "nothing is trained there yet; "
            elif impact[0] == 0:
                effect = f"all {impact[1]} trained models would be reused; "
            else:
                effect = f"{impact[0]} of {impact[1]} trained models would not be reused (their inputs changed); "
            raise ConfigError(
                f"{layout.root} was made by a different config (differs in {shown}); {effect}"
                "use --force to reuse it or --run-dir for a new one"
            )
        if old == new:
            remember_run(layout.root, new)
            return
    atomic_write_json(path, new)
    remember_run(layout.root, new)


def _execute(executor: Executor, view: RunView, jobs: list[Job], stage: str) -> int:
    view.add_jobs(jobs, stage)
    return len(executor.run(jobs, on_event=view))


def check_repeats(cfg: ExperimentConfig, seeds: int, vary: str) -> Vary:
    """`--seeds` and `--vary` checked against the config, before anything is written."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    return check_vary(vary, imported_seeds=seeds > 1 and cfg.seed_models.from_ is not None)


def run_experiment(
    cfg: ExperimentConfig,
    layout: RunLayout,
    backend: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    seeds: int = 1,
    vary: str = "domain-phase",
    force: bool = False,
    view: bool = True,
    console: Console | None = None,
    pilot: bool = False,
) -> dict[str, Any]:
    """Run (or finish) the whole experiment of `cfg` in `layout`; returns a summary dict.

    `seeds` runs repeats 0..seeds-1. With `vary="domain-phase"` they share the seed models and
    retrain the domain phase with other window orders; with `vary="seed-models"` repeats k > 0
    first retrain the seed models with other initial weights (hdee.plan.seeds). Repeat 0 is the same
    either way and writes results/results.json and plan.json; repeat k writes
    results/results-repeat<k>.json and plan-repeat<k>.json, or `-seed-models-repeat<k>` in place
    of `-repeat<k>`, which is where `hdee report` looks for them. A repeat whose results were
    computed from this config and plan, in a directory where none of its jobs ran (results carried
    from another machine, `kept_results`), is kept as it is.

    With `pilot`, every training job runs but nothing touches a test split: each repeat writes its
    validation pilot (`hdee.evaluation.pilot`, `layout.pilot_path`) instead of results and report.
    """
    vary = check_repeats(cfg, seeds, vary)
    t0 = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    snapshot_config(cfg, layout, force)
    for d in (layout.root, layout.experts_dir, layout.jobs_dir):
        clean_stale_temps(d)

    ran = 0
    env = environment()
    summary: dict[str, Any] = {"run_dir": str(layout.root), "plans": [], "results": []}
    with RunView(console=console, live=view, title=cfg.name) as live, make_executor(
        cfg, layout.root, backend=backend, address=address, workers=workers
    ) as executor:
        ran += _execute(executor, live, [prepare_job(cfg)], "prepare")
        vocab = prepared_vocab(layout)
        for repeat in range(seeds):
            plan = current_plan(cfg, vocab, layout, repeat, vary)
            if not pilot and kept_results(cfg, layout, plan, vary):
                plan.model_copy(update={"config_sha256": cfg.fingerprint()}).write(layout.plan_path(repeat, vary))
                live.add_jobs([], f"{cfg.name} repeat {repeat}: results kept (same config and plan)")
                summary["plans"].append(str(layout.plan_path(repeat, vary)))
                summary["results"].append(str(layout.results_path(repeat, vary)))
                summary["repeats_kept"] = summary.get("repeats_kept", 0) + 1
                continue
            stage = 1
            while True:
                plan = plan.model_copy(update={"config_sha256": cfg.fingerprint()})
                plan.write(layout.plan_path(repeat, vary))
                jobs = [j for j in plan.jobs if j.kind != "score"] if pilot else plan.jobs  # a pilot scores val only, below
                ran += _execute(executor, live, jobs, f"{cfg.name} repeat {repeat} stage {stage}")
                if plan.complete:
                    break
                decided = current_plan(cfg, vocab, layout, repeat, vary)  # the pilots have run now
                if decided.pending:
                    raise PlanError(f"strategies {', '.join(decided.pending)} stay pending after their pilot jobs ran")
                plan, stage = decided, stage + 1
            summary["plans"].append(str(layout.plan_path(repeat, vary)))
            if pilot:
                live.add_jobs([], f"{cfg.name} repeat {repeat}: validation pilot")
                pilot_evaluate(cfg, layout, expert_dirs(plan, layout), ensemble_specs(plan, layout), layout.pilot_path(repeat, vary))
                summary["results"].append(str(layout.pilot_path(repeat, vary)))
                continue
            live.add_jobs([], f"{cfg.name} repeat {repeat}: evaluating")
            trap = fault.arm("evaluate", layout.root)
            evaluate_plan(cfg, layout, plan, vary, env, t0)
            trap.before_record()
            summary["results"].append(str(layout.results_path(repeat, vary)))
        summary["jobs_reused"] = live.counts()["skipped"]
    summary["jobs_run"] = ran
    summary["seconds"] = round(time.monotonic() - t0, 1)
    if pilot:
        runs = load_repeats(layout, vary, pilot=True)
        summary["pilot"] = pilot_summary(runs, runs if vary == "seed-models" else runs[:1])
        return summary
    summary["comparison"] = write_report(layout, vary)
    summary["report"] = str(layout.report_files(vary)[0])
    return summary
