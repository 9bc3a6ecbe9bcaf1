"""`hdee eval`, `hdee generate`, `hdee average`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hdee.cli.app import app
from hdee.errors import ConfigError, EnsembleError

_out = Console()


def _read_run(run_dir: Path):  # -> (cfg, layout, experts, ensembles)
    from pydantic import ValidationError

    from hdee.config import ExperimentConfig
    from hdee.evaluate import EnsembleSpec
    from hdee.fsutil import read_json
    from hdee.layout import RunLayout

    layout = RunLayout(run_dir)
    for p in (layout.config_snapshot, layout.plan_json):
        if not p.is_file():
            raise EnsembleError(f"{p}: not found (is {run_dir} a run directory?)")
    try:
        cfg = ExperimentConfig.model_validate(read_json(layout.config_snapshot))
    except ValidationError as exc:
        raise ConfigError(f"{layout.config_snapshot}: {exc.errors()[0]['msg']}") from None
    plan = read_json(layout.plan_json)
    if not isinstance(plan.get("experts"), dict) or not isinstance(plan.get("ensembles"), dict):
        raise EnsembleError(f"{layout.plan_json}: needs 'experts' and 'ensembles' objects")
    experts = {eid: (Path(d) if Path(d).is_absolute() else layout.root / d) for eid, d in plan["experts"].items()}
    ensembles = {}
    for name, ens in plan["ensembles"].items():
        ids = ens.get("experts") if isinstance(ens, dict) else None
        if not isinstance(ids, list):
            raise EnsembleError(f"{layout.plan_json}: ensemble {name!r} has no 'experts' list")
        ensembles[name] = EnsembleSpec(experts=ids, meta={k: v for k, v in ens.items() if k != "experts"})
    return cfg, layout, experts, ensembles


@app.command("eval")
def eval_command(run_dir: Path = typer.Argument(..., help="a run directory with config.json and plan.json")) -> None:
    """(Re)compute per-domain perplexities of a run's experts and ensembles (cached scores are reused)."""
    from hdee.evaluate import evaluate

    cfg, layout, experts, ensembles = _read_run(run_dir)
    results = evaluate(cfg, layout, experts, ensembles)
    method = results["default_method"]
    table = Table(title=f"perplexity ({method})")
    table.add_column("ensemble")
    domains = [d["name"] for d in results["domains"]]
    for d in domains:
        table.add_column(d, justify="right")
    for name, ens in results["ensembles"].items():
        table.add_row(name, *(f"{ens['ppl'][method][d]:.3f}" for d in domains))
    _out.print(table)
    _out.print(f"wrote {layout.results_json}")


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
