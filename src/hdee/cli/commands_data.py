"""`hdee prepare`."""

from __future__ import annotations

from pathlib import Path

import typer

from hdee.cli.app import app


@app.command()
def prepare(
    config: Path = typer.Argument(..., help="experiment config (.toml or .yaml)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="default: runs/<config name>"),
) -> None:
    """Build token shards for every domain of CONFIG."""
    raise NotImplementedError
