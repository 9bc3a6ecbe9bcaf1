"""`hdee seeds`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.cli.commands_run import DEFAULT_CONFIG


@app.command("seeds")
def seeds_cmd(
    config: Path = typer.Argument(DEFAULT_CONFIG, help="experiment config with seed_models.cache = true"),
    draws: int = typer.Option(1, "--draws", min=1, help="seed draws to build: draw k is what repeat k of --vary seed-models imports"),
    backend: str | None = typer.Option(None, "--backend", help="local or ray (default: execute.backend)"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="worker processes (local) or CPUs (private Ray)"),
    force: bool = typer.Option(False, "--force", help="reuse a run directory made by a different config"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="whose prepared data the seeds read; default: runs/<config name>"),
    view: bool = typer.Option(True, "--view/--no-view", help="live view of the jobs"),
) -> None:
    """Train CONFIG's seed models once into the seed cache ($HDEE_CACHE/seeds/) and import them into the run."""
    from hdee.config import load_config
    from hdee.core.layout import RunLayout
    from hdee.core.lock import run_dir_lock
    from hdee.pipeline.seed_build import build_seeds, check_buildable

    cfg = load_config(config)
    check_buildable(cfg, draws)  # before the lock, which creates the run dir
    layout = RunLayout.of(cfg.name, run_dir)
    console = make_console()
    with run_dir_lock(layout.root, "seeds"):
        summary = build_seeds(cfg, layout, draws=draws, backend=backend, workers=workers, force=force, view=view, console=console)
    t = Table(title=f"{cfg.name}: seed models (validation loss on the seed domains, nats per token)", header_style="bold")
    for col, just in (("draw", "right"), ("size", "center"), ("steps", "right"), ("tokens", "right"), ("FLOPs", "right"),
                      ("val loss", "right"), ("", "left"), ("cache entry", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in summary["seeds"]:
        t.add_row(str(r["draw"]), str(r["size"]), f"{r['steps']:,}", f"{r['tokens']:,}", f"{r['flops']:.3g}",
                  f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-", "trained" if r["trained_now"] else "cached",
                  r["entry"])
    console.print(t)
    console.print(f"done in {summary['seconds']} s ({summary['jobs_run']} jobs run)", highlight=False)
