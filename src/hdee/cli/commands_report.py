"""`hdee report`."""

from __future__ import annotations

from pathlib import Path

import typer

from hdee.pipeline.operations import report_run
from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.core.errors import HdeeError
from hdee.core.layout import RunLayout
from hdee.core.lock import run_dir_lock
from hdee.report.write import rich_table
from hdee.plan.seeds import check_vary


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run directory with results/results.json"),
    vary: str = typer.Option("domain-phase", "--vary", help="which repeats: domain-phase or seed-models (as `hdee run --vary`)"),
    trust_plugins: bool = typer.Option(False, "--trust-plugins", help="import the plugins the run's config.json names even if this run directory was not started here"),
) -> None:
    """Rebuild the report (report.md, report.png; report-seed-models.* with --vary seed-models) and curves.png
    from a run's saved results (no recomputation)."""
    check_vary(vary)
    if not run_dir.is_dir():
        raise HdeeError(f"{run_dir}: run directory not found")
    with run_dir_lock(run_dir, "report"):
        cmp = report_run(run_dir, vary, trust_plugins)
    layout = RunLayout(run_dir)
    md, png = layout.report_files(vary)
    console = make_console()
    console.print(rich_table(cmp))
    console.print(f"wrote {md}, {png}, {layout.curves_png}")
