"""Command-line interface: a thin typer layer over the Python API. Holds no logic."""

from __future__ import annotations

import sys

from rich.console import Console

from hdee.cli.app import app
from hdee.errors import HdeeError

# Each module registers its commands on `app` when imported.
from hdee.cli import commands_data, commands_ensemble, commands_lm_eval, commands_report, commands_run, commands_train  # noqa: F401,E402

_err = Console(stderr=True)


def main() -> None:
    try:
        app()
    except HdeeError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
