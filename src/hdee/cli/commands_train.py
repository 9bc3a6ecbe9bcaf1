"""`hdee train`: one training job (seed or branch) from the command line."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import typer

from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.config import load_config
from hdee.core.errors import ConfigError
from hdee.core.layout import RunLayout
from hdee.core.lock import run_dir_lock

_out = make_console()


@app.command("train")
def train(
    job_file: Path = typer.Option(None, "--job", help="A TrainJob JSON file (all other options are ignored)."),
    config: Path = typer.Option(None, "--config", "-c", help="Experiment config (TOML/YAML) giving the size family and training settings."),
    size: str = typer.Option("M", "--size", help="Size name from model.intermediate."),
    domains: list[str] = typer.Option([], "--domain", "-d", help="Training domain: a name under RUN_DIR/data/domains, or a domain directory. Repeat for a mixture."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Run directory holding prepared data (default runs/<config name>)."),
    out: Path = typer.Option(None, "--out", "-o", help="Expert output directory."),
    parent: Path = typer.Option(None, "--parent", help="Expert to branch from (default: train from scratch)."),
    steps: int = typer.Option(None, "--steps"),
    tokens: int = typer.Option(None, "--tokens"),
    flops: float = typer.Option(None, "--flops", help="Budget in FLOPs (6 x non-embedding params x tokens)."),
    vocab: int = typer.Option(None, "--vocab", help="Model vocab (default: the run's tokenizer size)."),
    seed: int = typer.Option(None, "--seed"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train one expert (seed or branch); rerunning resumes or returns the finished expert."""
    from hdee.train import Budget, run_train_job
    from hdee.train.distributed import load_job
    from hdee.train.job import job_from_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if job_file is not None:
        if not job_file.is_file():
            raise ConfigError(f"{job_file}: job file not found")
        try:
            job = load_job(job_file)
        except ValueError as exc:
            raise ConfigError(f"{job_file}: invalid job: {str(exc).splitlines()[0]}") from None
    else:
        if config is None or not domains or out is None:
            raise ConfigError("hdee train needs --job, or --config with --domain and --out")
        cfg = load_config(config)
        layout = RunLayout.of(cfg.name, run_dir)
        given = [x for x in (steps, tokens, flops) if x is not None]
        if len(given) != 1:
            raise ConfigError("hdee train needs exactly one of --steps, --tokens or --flops")
        for flag, value in (("--steps", steps), ("--tokens", tokens), ("--flops", flops)):
            if value is not None and not value > 0:
                raise ConfigError(f"{flag} {value}: must be positive")
        if seed is not None and not 0 <= seed < 2**63:
            raise ConfigError(f"--seed {seed}: must be a whole number in [0, 2**63)")
        tok_hash = None
        if vocab is None:
            from hdee.data.tokenizer import tokenizer_hash, vocab_size

            if not layout.tokenizer_path.is_file():
                raise ConfigError(f"{layout.tokenizer_path}: tokenizer not found (prepare the data first, or pass --vocab)")
            vocab, tok_hash = vocab_size(layout.tokenizer_path), tokenizer_hash(layout.tokenizer_path)
        tok_file = layout.tokenizer_path if layout.tokenizer_path.is_file() else None
        dirs = [Path(d) if Path(d).is_dir() else layout.domain_dir(d) for d in domains]
        job = job_from_config(
            cfg,
            size=size,
            domain_dirs=dirs,
            out_dir=out,
            budget=Budget(steps=steps, tokens=tokens, flops=flops),
            vocab=vocab,
            parent=parent,
            tokenizer_hash=tok_hash,
            tokenizer=tok_file,
            seed=seed,
        )
    with run_dir_lock(run_dir, "train") if run_dir is not None else contextlib.nullcontext():
        record = run_train_job(job, progress=progress)
    loss = record.get("final_val_loss")
    _out.print(
        f"{job.out_dir}: {record['steps']} steps, {record['tokens']:,} tokens, {record['flops']:.3g} FLOPs"
        + (f", val loss {loss:.4f}" if loss is not None else "")
    )
