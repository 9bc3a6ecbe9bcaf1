"""`hdee report`."""

from __future__ import annotations

from pathlib import Path

import typer

from hdee.api import report_run
from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.errors import HdeeError
from hdee.layout import RunLayout
from hdee.lock import run_dir_lock
from hdee.report import rich_table
from hdee.seeds import check_vary


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run directory with results/results.json"),
    vary: str = typer.Option("domain-phase", "--vary", help="which repeats: domain-phase or seed-models (as `hdee run --vary`)"),
) -> None:
    """Rebuild the report (report.md, report.png; report-seed-models.* with --vary seed-models) and curves.png
    from a run's saved results (no recomputation)."""
    check_vary(vary)
    if not run_dir.is_dir():
        raise HdeeError(f"{run_dir}: run directory not found")
    with run_dir_lock(run_dir, "report"):
        cmp = report_run(run_dir, vary)
    layout = RunLayout(run_dir)
    md, png = layout.report_files(vary)
    console = make_console()
    console.print(rich_table(cmp))
    console.print(f"wrote {md}, {png}, {layout.curves_png}")


@app.command()
def power(
    run_dir: Path = typer.Argument(..., help="a run directory with validation pilots: results of several repeats"),
    margin: float = typer.Option(..., "--margin", min=0.0, help="equivalence margin in nats/token"),
    vary: str = typer.Option("seed-models", "--vary", help="which repeats measure the noise (as `hdee run --vary`)"),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="level of each one-sided test"),
    target: float = typer.Option(0.8, "--power", min=0.5, max=0.999, help="chance of showing equivalence when there is none to find"),
) -> None:
    """The repeats the pre-registered TOST needs: the validation endpoint's spread over a run's repeats."""
    from hdee.compare import comparison, load_repeats
    from hdee.verdict import power_table

    kind = check_vary(vary)
    if margin <= 0:
        raise HdeeError("--margin must be above 0")
    layout = RunLayout(run_dir)
    if not layout.results_json.is_file():
        raise HdeeError(f"{layout.results_json}: no results (run `hdee run` first)")
    runs = load_repeats(layout, kind)
    if len(runs) < 2:
        raise HdeeError(f"{run_dir}: {len(runs)} repeat(s) of kind {kind}; the noise needs at least 2 (`hdee run --seeds N --vary {kind}`)")
    cmp = comparison(runs, kind)
    base = cmp.get("baseline")
    if base is None:
        raise HdeeError(f"{run_dir}: no baseline strategy among the results")
    rows = power_table(runs, cmp["kind"], cmp["method"], base, margin, alpha, target)
    console = make_console()
    console.print(f"validation endpoint (mean trained-domain log-perplexity minus {base}'s, method {cmp['method']}) over "
                  f"{len(runs)} repeats; TOST within ±{margin:g} at α = {alpha:g}, power {target:g}:", highlight=False)
    for s, r in rows.items():
        console.print(f"  {s}: mean {r['mean']:+.4f}, sd {r['sd']:.4f} -> {r['needed']} repeats", highlight=False)
