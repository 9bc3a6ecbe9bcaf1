"""`hdee lm-eval`: lm-evaluation-harness tasks on one strategy's ensemble (needs the lm-eval extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.core.errors import ConfigError


@app.command("lm-eval")
def lm_eval_command(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    strategy: str = typer.Option(..., "--strategy", help="whose ensemble (a strategy of the run)"),
    method: str | None = typer.Option(None, "--method", help="mixing method (default: the registry's default)"),
    tasks: str = typer.Option(..., "--tasks", help="comma-separated lm-eval task names"),
    include_path: Path | None = typer.Option(None, "--include-path", help="a folder of extra task YAMLs"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="at most N examples per task"),
    prior_domain: str | None = typer.Option(None, "--prior-domain", help="cached-prior methods: the run domain whose prior to use"),
    num_fewshot: int | None = typer.Option(None, "--num-fewshot", min=0),
    trust_plugins: bool = typer.Option(False, "--trust-plugins", help="import the plugins the run's config.json names even if this run directory was not started here"),
    output_path: Path | None = typer.Option(None, "--output-path", help="the results file (default: RUN_DIR/results/lm-eval-STRATEGY-METHOD-TASKS.json)"),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="loglikelihood requests per forward pass of each expert"),
    log_samples: bool = typer.Option(False, "--log-samples", help="also save every sample's inputs and responses"),
    bootstrap_iters: int = typer.Option(100000, "--bootstrap-iters", min=0, help="lm-eval's bootstrap for standard errors (0: none)"),
    force: bool = typer.Option(False, "--force", help="replace an existing results file"),
) -> None:
    """Run lm-eval TASKS on the mixture of STRATEGY's experts and print lm-eval's table."""
    try:
        from hdee.evaluation.lm_eval import run_lm_eval
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    from lm_eval.utils import make_table

    from hdee.registry import default_method
    from hdee.run import load_run

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise ConfigError("--tasks names no task")
    results, path = run_lm_eval(load_run(run_dir, trust_plugins), strategy, method or default_method(), names, include_path, limit, prior_domain, num_fewshot,
                                output_path=output_path, batch_size=batch_size, log_samples=log_samples,
                                bootstrap_iters=bootstrap_iters, force=force)
    console = make_console()
    console.print(make_table(results), markup=False, highlight=False)
    console.print(f"wrote {path}", highlight=False)
