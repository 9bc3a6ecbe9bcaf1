"""`hdee plan`, `hdee run`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

if TYPE_CHECKING:
    from hdee.plan import Plan

from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.config import load_config
from hdee.core.layout import RunLayout
from hdee.registry import STRATEGIES

DEFAULT_CONFIG = Path("configs/regime.toml")

def _fmt_int(x: int | None) -> str:
    return f"{x:,}" if x is not None else "-"


def _jobs_table(plan: Plan) -> Table:
    t = Table(title=f"plan: {plan.config_name} (repeat {plan.repeat}, vocab {plan.vocab:,})", header_style="bold")
    for col, just in (("job", "left"), ("kind", "left"), ("size", "center"), ("steps", "right"), ("tokens", "right"),
                      ("FLOPs", "right"), ("parent", "left"), ("used by", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    scores = plan.jobs_of("score")
    for j in plan.jobs:
        if j.kind == "score":
            continue
        t.add_row(j.id, j.kind, j.size or "-", _fmt_int(j.steps), _fmt_int(j.tokens), f"{j.flops:.3g}" if j.flops else "-",
                  j.parent or "-", ", ".join(j.used_by) or "all")
    if scores:
        t.add_row(f"score x {len(scores)}", "score", "-", "-", "-", "-", f"{len(scores)} experts x {len(scores[0].domains)} domains", "")
    return t


def _flops_cell(flops: float, budget: float | None) -> str:
    return f"{flops:.3e}" + (f" ({flops / budget - 1:+.2%})" if budget else "")


def _totals_table(plan: Plan) -> Table:
    """Per strategy: its seeds, each iteration's FLOPs (the plan's count) and its domain phase in
    both FLOP counts against the baseline's (the plan's count is the one budgets are matched in)."""
    iterations = sorted({k for e in plan.ensembles.values() for k in e.iteration_flops}, key=int)
    conventions = sorted(plan.budget_by, key=lambda c: c != plan.flops_convention)
    t = Table(
        title=f"per-strategy compute (domain-phase budget {plan.budget_flops:.3e} FLOPs, {plan.flops_convention} count)",
        header_style="bold",
    )
    t.add_column("strategy")
    t.add_column("ensemble")
    t.add_column("seeds (one per size)")
    for c in conventions:
        t.add_column(f"seed FLOPs ({c})", justify="right")
    for k in iterations:
        t.add_column(f"iter {k} FLOPs", justify="right")
    for c in conventions:
        t.add_column(f"domain FLOPs ({c}{', budget' if c == plan.flops_convention else ''}) vs baseline", justify="right")
    for name, e in plan.ensembles.items():
        seeds = [_flops_cell(e.flops_by[c]["seed"], None) if c in e.flops_by else "-" for c in conventions]
        if e.pending:
            domain = [_flops_cell(e.flops_by[c]["domain"], None) + " + ?" if c in e.flops_by else "-" for c in conventions]
            t.add_row(name, "pending (pilots first)", ", ".join(e.sizes_needed), *seeds, *["-"] * len(iterations), *domain)
            continue
        order = list(e.sizes_needed)
        sizes = sorted({str(plan.job(x).size) for x in e.experts}, key=lambda s: order.index(s) if s in order else 99)
        steps = sorted({plan.job(x).steps for x in e.experts})
        desc = f"{len(e.experts)} x {'/'.join(sizes)} @ {'/'.join(map(str, steps))} steps"
        iters = [f"{e.iteration_flops[k]:.3e}" if k in e.iteration_flops else "-" for k in iterations]
        domain = [_flops_cell(e.flops_by[c]["domain"], plan.budget_by[c]) if c in e.flops_by else "-" for c in conventions]
        t.add_row(name, desc, ", ".join(e.sizes_needed), *seeds, *iters, *domain)
    return t


def _pilots_line(plan: Plan, strategy: str) -> str:
    """What a pending strategy's pilots cost (its decision follows once they ran)."""
    pilots = [j for j in plan.jobs_of("pilot") if strategy in j.used_by]
    counts: dict[int, int] = {}
    for j in pilots:
        counts[int(j.steps or 0)] = counts.get(int(j.steps or 0), 0) + 1
    runs = ", ".join(f"{n} x {steps} step{'s' if steps != 1 else ''}" for steps, n in sorted(counts.items(), reverse=True))
    share = sum(j.flops for j in pilots) / plan.budget_flops
    return f"{strategy}: pending until its {len(pilots)} pilot jobs ran ({runs}; {share:.2%} of the budget)"


def _seed_proportions_line(cfg, plan: Plan) -> str | None:
    """Seed tokens per expert-iteration and per non-embedding parameter (trained seeds only)."""
    from hdee.budget import seed_proportions

    tokens = max((int(j.tokens or 0) for j in plan.jobs_of("seed")), default=0)
    if not tokens:
        return None
    p = seed_proportions(cfg, plan.vocab, tokens)
    per_param = ", ".join(f"{s} {p[f'per_param_{s}']:.1f}" for s in cfg.size_names)
    return (f"seed models: {tokens:,} tokens each = {p['per_iteration']:.1f}:1 seed tokens per expert-iteration "
            f"(baseline {cfg.budget.baseline.size} x {cfg.budget.baseline.steps} steps; the paper about 30-50:1); "
            f"tokens per non-embedding parameter: {per_param}; domain-phase peak lr {cfg.budget.schedule.lr:g} = "
            f"{cfg.budget.schedule.lr / cfg.seed_models.schedule.lr:.3g}x the seeds' {cfg.seed_models.schedule.lr:g} "
            "(the paper 0.1x)" + _cache_note(plan))


def _cache_note(plan: Plan) -> str:
    """How many of the plan's cached seeds are built (seed_models.cache)."""
    from hdee.train.seed_cache import is_built, seeds_root

    keys = [str(j.cache) for j in plan.jobs_of("seed") if j.cache]
    if not keys:
        return ""
    return f"; seed cache: {sum(is_built(k) for k in keys)} of {len(keys)} built in {seeds_root()} (hdee seeds builds them)"


@app.command("plan")
def plan_cmd(
    config: Path = typer.Argument(DEFAULT_CONFIG, help="experiment config (.toml or .yaml)"),
    vocab: int | None = typer.Option(None, "--vocab", help="vocab for embedding sizes when no tokenizer is prepared"),
    repeat: int = typer.Option(0, "--repeat", min=0, help="which repeat to plan"),
    vary: str = typer.Option("domain-phase", "--vary", help="what the repeat retrains (as `hdee run --vary`)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="default: runs/<config name>"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the plan as JSON here (- : print only the JSON)"),
    estimate: bool = typer.Option(True, "--estimate/--no-estimate", help="estimate the training time from this machine's measured throughput"),
) -> None:
    """Show the jobs of CONFIG's strategies and their compute, without running anything."""
    from hdee.pipeline.operations import preview_plan

    cfg = load_config(config)
    preview = preview_plan(cfg, RunLayout.of(cfg.name, run_dir), vocab, repeat, vary)
    plan, v, source = preview.plan, preview.vocab, preview.vocab_source
    if json_out is not None and str(json_out) == "-":
        typer.echo(plan.model_dump_json(indent=2))  # every number in full, nothing else on stdout
        return
    console = make_console()
    console.print(_jobs_table(plan))
    console.print(_totals_table(plan))
    console.print(
        f"vocab {v:,} from {source}. FLOPs: paper = 6 x non-embedding params x tokens (the HDEE paper's count); "
        "hardware = every matmul of a training step, LM head and causal attention included. Budgets are matched in "
        f"the {plan.flops_convention} count (budget.flops), which the job and iteration columns show. Seed compute is "
        "shown apart from the domain phase: a strategy with experts of several sizes needs one seed model per size."
    )
    seed_line = _seed_proportions_line(cfg, plan)
    if seed_line:
        console.print(seed_line, highlight=False)
    for name, e in plan.ensembles.items():
        describe = STRATEGIES.get(name).describe
        if e.decision and describe is not None:
            console.print("\n".join(describe(e.decision)), highlight=False)
        elif e.pending:
            console.print(_pilots_line(plan, name), highlight=False)
    if estimate:
        console.print(_estimate_line(cfg, plan, RunLayout.of(cfg.name, run_dir)), highlight=False)
    if json_out:
        plan.write(json_out)


def _estimate_line(cfg, plan, layout: RunLayout) -> str:
    from hdee.execute.throughput import estimate

    est = estimate(cfg, plan, layout)
    if not est.jobs:
        return "time: every training job of this plan is finished in the run directory; nothing left to train."
    if est.rate <= 0:
        return f"time: {est.source}."
    pending = " (strategies still pending add their pilots' decisions later)" if any(e.pending for e in plan.ensembles.values()) else ""
    return (f"time: about {_duration(est.seconds)} to train the {est.jobs} training jobs left ({est.flops:.3e} hardware FLOPs) "
            f"on {est.workers} worker{'s' if est.workers != 1 else ''} at {est.rate:.3e} FLOP/s each, {est.source}{pending}; "
            "dependencies can leave workers idle, and scoring and evaluation come on top.")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else (f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s")


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(DEFAULT_CONFIG, help="experiment config (.toml or .yaml)"),
    backend: str | None = typer.Option(None, "--backend", help="local, ray or slurm (default: execute.backend)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address, e.g. auto or host:port"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="worker processes (local) or CPUs (private Ray)"),
    seeds: int = typer.Option(1, "--seeds", min=1, help="run N repeats with other seeds"),
    vary: str = typer.Option("domain-phase", "--vary",
                             help="what repeats retrain: domain-phase (shared seed models) or seed-models (then the domain phase)"),
    force: bool = typer.Option(False, "--force", help="reuse a run directory made by a different config"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="default: runs/<config name>"),
    view: bool = typer.Option(True, "--view/--no-view", help="live view of the jobs"),
    pilot: bool = typer.Option(False, "--pilot", help="train everything, then score the validation split only: the "
                               "regime gates and `hdee power` without any test-split number (results/pilot*.json)"),
) -> None:
    """Run (or finish) the whole experiment: prepare, plan, train, score, evaluate, report."""
    from hdee.core.lock import run_dir_lock
    from hdee.pipeline.experiment import check_repeats, run_experiment
    from hdee.report.write import rich_table

    cfg = load_config(config)
    check_repeats(cfg, seeds, vary)  # before the lock, which creates the run dir
    layout = RunLayout.of(cfg.name, run_dir)
    console = make_console()
    with run_dir_lock(layout.root, "run"):
        summary = run_experiment(
            cfg, layout, backend=backend, address=address, workers=workers, seeds=seeds, vary=vary, force=force, view=view,
            console=console, pilot=pilot,
        )
    if pilot:
        print_pilot(console, summary)
        return
    console.print(rich_table(summary["comparison"]))
    console.print(
        f"done in {summary['seconds']} s ({summary['jobs_run']} jobs run, {summary['jobs_reused']} reused): {', '.join(summary['results'])}; report {summary['report']}",
        highlight=False,
    )


def print_pilot(console, summary: dict) -> None:
    """The regime gates of a validation pilot, one line each."""
    p = summary["pilot"]
    g = p["gates"]
    console.print(f"validation pilot of {p['repeats']} repeat(s), method {p['method']}; no test split was read", highlight=False)
    for s, r in g["a"]["rows"].items():
        nums = f"{r['ensemble']:.4f} vs its seeds {r['seeds']:.4f}" if r["measurable"] else "not measurable"
        console.print(f"  (a) {s}: {'pass' if r['passed'] else 'FAIL'} ({nums})", highlight=False)
    b = g["b"]
    nums = (f"{b['sizes'][1]} beats {b['sizes'][0]} by {b['mean']:.4f} ± {b['sd']:.4f} over {b['draws']} draws"
            if b["measurable"] else b["why"])
    console.print(f"  (b) seed sizes: {'pass' if b['passed'] else 'FAIL'} ({nums})", highlight=False)
    for name, row in (b.get("spreads") or {}).items():
        if row["measurable"]:
            console.print(f"      beside: {name} {row['sizes'][1]} beats {row['sizes'][0]} by {row['mean']:.4f} ± {row['sd']:.4f}",
                          highlight=False)
    c = g["c"]
    console.print(f"  (c) experts beat their parents: {'pass' if c['passed'] else 'FAIL'} ({c['beaten']} of {c['experts']})",
                  highlight=False)
    console.print(f"done in {summary['seconds']} s ({summary['jobs_run']} jobs run, {summary['jobs_reused']} reused): "
                  f"{', '.join(summary['results'])}", highlight=False)
