"""`hdee export`: one strategy's ensemble as a Hugging Face model directory."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from hdee.cli.app import app
from hdee.cli.output import make_console


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    strategy: str = typer.Option(..., "--strategy", help="whose ensemble (a strategy of the run)"),
    out: Path = typer.Option(..., "--out", help="the model directory to write"),
    method: str = typer.Option("prefix-posterior", "--method", help="mixing method the exported model computes"),
    ensemble: str = typer.Option("final", "--ensemble", help="final (the last iteration's experts) or all"),
    prior_domain: str | None = typer.Option(None, "--prior-domain", help="cached-prior methods: the domain the fixed prior is estimated on"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out directory"),
) -> None:
    """Write STRATEGY's ensemble as one HF causal LM: AutoModelForCausalLM, pipeline and lm-eval load it."""
    from hdee.run import load_run
    from hdee.export.writer import export_run
    from hdee.core.lock import run_dir_lock

    started = time.monotonic()
    run = load_run(run_dir)
    with run_dir_lock(run.layout.root, "export"):  # a routed method may build the run's router
        done = export_run(run, strategy, method, out, ensemble, prior_domain, force)
    spec = done.spec
    console = make_console()
    sizes = ", ".join(f"{e} ({spec.infos[e].record.size_name})" for e in spec.models)
    console.print(f"{spec.strategy} ({spec.kind}), {spec.method}: {sizes}", highlight=False)
    if spec.prior_domain:
        console.print(f"prior fixed on {spec.prior_domain}", highlight=False)
    console.print(f"wrote {done.path} ({len(done.files)} files, {time.monotonic() - started:.1f} s)", highlight=False)
