"""`hdee prepare`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hdee.cli.app import app
from hdee.cli.output import make_console


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


@app.command()
def prepare(
    config: Path = typer.Argument(..., help="experiment config (.toml or .yaml)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="default: runs/<config name>"),
) -> None:
    """Build the tokenizer and token shards for every domain of CONFIG."""
    from hdee.config import load_config
    from hdee.data.prepare import prepare as prepare_data
    from hdee.core.layout import RunLayout
    from hdee.core.lock import run_dir_lock

    cfg = load_config(config)
    layout = RunLayout.of(cfg.name, run_dir)
    console = make_console()
    with run_dir_lock(layout.root, "prepare"), Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("prepare", total=1)

        def on_progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        manifests = prepare_data(cfg, layout, progress=on_progress)

    table = Table(title=f"{cfg.name}: token shards in {layout.data_dir}")
    table.add_column("domain", no_wrap=True)
    for col in ("role", "tier"):
        table.add_column(col)
    for col in ("docs", "MB", "train tok", "val tok", "test tok", "B/tok", "bad utf-8", "dup docs", "dup share"):
        table.add_column(col, justify="right")
    for name, m in manifests.items():
        bpt = m.bytes_per_token()
        table.add_row(
            name, m.role, m.tier or "-", str(sum(s.docs for s in m.splits.values())),
            _mb(sum(s.bytes for s in m.splits.values())),
            *(f"{m.splits[s].tokens:,}" for s in ("train", "val", "test")),
            f"{bpt:.2f}" if bpt else "-", str(m.invalid_utf8),
            str(sum(s.dup_docs for s in m.splits.values())), f"{100 * m.duplicate_share():.0f}%",
        )
    console.print(table)
    console.print("dup docs: val/test documents dropped because they copy training text "
                  "(exact, near-duplicate or contained); dup share: their share of the val/test text read")
