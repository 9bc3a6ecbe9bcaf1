"""Command-line interface: a thin typer layer over the Python API. Holds no logic."""

from __future__ import annotations

from hdee.cli.app import app

# Each module registers its commands on `app` when imported.
from hdee.cli import commands_data, commands_ensemble, commands_export, commands_lm_eval, commands_report, commands_run, commands_seeds, commands_train  # noqa: F401,E402


def main() -> None:
    """The `hdee` console script; errors become one line and exit status 2 (see `hdee.cli.app`).

    SIGTERM unwinds like Ctrl-C: worker pools stop, the run-directory lock is released.
    """
    from hdee.execute.lifeline import exit_on_sigterm

    exit_on_sigterm()
    app()
