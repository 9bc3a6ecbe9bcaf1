"""`hdee eval`, `hdee generate`, `hdee average`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.errors import EnsembleError

_out = make_console()


@app.command("eval")
def eval_command(run_dir: Path = typer.Argument(..., help="a run directory with config.json and plan.json")) -> None:
    """(Re)compute per-domain perplexities of a run's experts and ensembles (cached scores are reused)."""
    from hdee.api import evaluate_run

    run, results = evaluate_run(run_dir)
    choice = results["method_choice"]
    method = choice["method"]
    table = Table(title=f"perplexity ({method}, chosen on {choice['chosen_on']})")
    table.add_column("ensemble")
    domains = [d["name"] for d in results["domains"]]
    for d in domains:
        table.add_column(d, justify="right")
    for name, ens in results["ensembles"].items():
        table.add_row(name, *(f"{ens['ppl'][method][d]:.3f}" for d in domains))
    _out.print(table)
    _out.print(f"wrote {run.layout.results_json}")


@app.command()
def generate(
    expert_dirs: list[Path] = typer.Argument(..., help="expert directories (one tokenizer)"),
    prompt: str = typer.Option(..., "--prompt", help="text to continue"),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="tokenizer.json of the experts"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy"),
    top_p: float = typer.Option(1.0, "--top-p"),
    method: str = typer.Option("prefix-posterior", "--method"),
    top_k: int = typer.Option(2, "--top-k", min=1, help="experts kept by --method top-k"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample a continuation of PROMPT from the ensemble's mixture."""
    from hdee.ensemble import Ensemble

    ens = Ensemble(expert_dirs)
    out = ens.generate(
        prompt, max_new_tokens, temperature, top_p, method, seed, tokenizer=tokenizer, top_k=top_k
    )
    _out.print(prompt + (out.text or ""), highlight=False, markup=False)


@app.command()
def average(
    expert_dirs: list[Path] = typer.Argument(..., help="experts of one architecture"),
    out: Path = typer.Option(..., "--out", help="output model directory"),
    weights: str | None = typer.Option(None, "--weights", help="comma-separated, e.g. 0.2,0.8 (default: equal)"),
) -> None:
    """Average the parameters of experts of one architecture into a new HF model directory."""
    from hdee.ensemble import average_experts

    parsed = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise EnsembleError(f"--weights {weights!r}: expected comma-separated numbers") from None
    average_experts(expert_dirs, parsed, out)
    _out.print(f"wrote {out}")
