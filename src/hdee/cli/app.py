"""The typer application every command module registers on."""

import errno
import os

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from hdee.core.errors import HdeeError
from hdee.execute.lifeline import Terminated


class OneLineErrors(TyperGroup):
    """Every command: an `HdeeError` becomes one line on stderr and exit status 2.

    Handled here rather than around `app()`, so the console script and typer's test runner
    behave the same.
    """

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except HdeeError as exc:
            _one_line(str(exc))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            _one_line(f"{where}{os.strerror(exc.errno).lower()}; free space and rerun (finished outputs are kept)")
        except MemoryError:
            _one_line("out of memory; free memory, or lower the sizes or token caps the command works with")
        except Terminated:
            Console(stderr=True).print("[bold red]stopped:[/] SIGTERM; finished outputs are kept, the same command resumes",
                                       highlight=False, soft_wrap=True)
            raise


def _one_line(message: str) -> None:
    message = " ".join(message.split())  # one line, whatever the message held
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


app = typer.Typer(
    name="hdee",
    help="Heterogeneous domain-expert ensembles: prepare data, plan, train, ensemble, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


@app.callback()
def _root() -> None:
    """Heterogeneous domain-expert ensembles."""
