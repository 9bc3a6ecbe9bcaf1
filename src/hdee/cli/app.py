"""The typer application every command module registers on."""

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from hdee.core.errors import HdeeError


class OneLineErrors(TyperGroup):
    """Every command: an `HdeeError` becomes one line on stderr and exit status 2.

    Handled here rather than around `app()`, so the console script and typer's test runner
    behave the same.
    """

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except HdeeError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message held
            Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None


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
