"""`hdee report`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hdee.cli.app import app
from hdee.layout import RunLayout
from hdee.report import rich_table, write_report


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory with results/results.json")) -> None:
    """Rebuild report.md, report.png and curves.png from a run's saved results (no recomputation)."""
    cmp = write_report(RunLayout(run_dir))
    console = Console()
    console.print(rich_table(cmp))
    console.print(f"wrote {run_dir / 'report.md'}, {run_dir / 'report.png'}, {run_dir / 'curves.png'}")
