"""The typer application every command module registers on."""

import typer

app = typer.Typer(
    name="hdee",
    help="Heterogeneous domain-expert ensembles: prepare data, plan, train, ensemble, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Heterogeneous domain-expert ensembles."""
