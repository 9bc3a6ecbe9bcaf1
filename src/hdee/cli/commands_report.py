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


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory with results/results.json")) -> None:
    """Rebuild report.md, report.png and curves.png from a run's saved results (no recomputation)."""
    if not run_dir.is_dir():
        raise HdeeError(f"{run_dir}: run directory not found")
    with run_dir_lock(run_dir, "report"):
        cmp = report_run(run_dir)
    layout = RunLayout(run_dir)
    console = make_console()
    console.print(rich_table(cmp))
    console.print(f"wrote {layout.report_md}, {layout.report_png}, {layout.curves_png}")
