"""`hdee eval`, `hdee generate`, `hdee average`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from hdee.registry import default_method
from rich.table import Table

from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.core.errors import ConfigError, EnsembleError
from hdee.expert_dir import ExpertRecord

_out = make_console()
_err = make_console(stderr=True)


def _eval_table(results: dict, title: str) -> Table:
    """One row per ensemble, one column per domain, in the main method."""
    choice = results["method_choice"]
    method = choice["method"]
    table = Table(title=f"{title} ({method}, chosen on {choice['chosen_on']})")
    table.add_column("ensemble")
    domains = [d["name"] for d in results["domains"]]
    for d in domains:
        table.add_column(d, justify="right")
    for name, ens in results["ensembles"].items():
        table.add_row(name, *(f"{ens['ppl'][method][d]:.3f}" for d in domains))
    return table


def _text_tables(results: dict) -> list[Table]:
    """For one new domain: every ensemble under every method, then every model on its own."""
    domain = results["domains"][0]["name"]
    methods = results["methods"]
    ens_table = Table(title=f"perplexity on {domain} ({results['domains'][0]['tokens']:,} tokens), every mixing method")
    ens_table.add_column("ensemble")
    for m in methods:
        ens_table.add_column(m + (" *" if m == results["method_choice"]["method"] else ""), justify="right")
    for name, ens in results["ensembles"].items():
        ens_table.add_row(name, *(f"{ens['ppl'][m][domain]:.3f}" for m in methods))
    fixed = results["method_choice"]["chosen_on"] == "config"
    ens_table.caption = "* the main method: " + ("eval.method of the run's config" if fixed else "lowest on the held-out selection windows")
    models = Table(title=f"each model on {domain}")
    for col in ("model", "kind", "size", "trained on"):
        models.add_column(col)
    models.add_column("perplexity", justify="right")
    for eid, e in sorted(results["experts"].items(), key=lambda kv: kv[1]["ppl"][domain]):
        rec = ExpertRecord.model_validate(e["meta"])
        trained = ", ".join(rec.trained_domains) or "-"
        models.add_row(eid, rec.kind or "-", rec.size_name or "-", trained, f"{e['ppl'][domain]:.3f}")
    return [ens_table, models]


def _print_opt_out(run, targets: list[str]) -> None:
    from hdee.evaluation.optout import against_whole, opt_out, results_path

    res = opt_out(run, targets)
    method, rows = against_whole(run, res)
    table = Table(title=f"perplexity without {', '.join(targets)} ({method}; change against the whole ensemble)")
    table.add_column("domain")
    names = [*res["ensembles"], *res["emptied"]]
    for name in names:
        table.add_column(name, justify="right")
    for d, cells in rows.items():
        shown = ["removed" if c is None else f"{c[0]:.3f}" + (f" ({c[1]:+.1%})" if c[1] is not None else "") for c in cells.values()]
        table.add_row(d, *shown)
    _out.print(table)
    for target, ids in res["without"].items():
        _out.print(f"--without {target}: removed {', '.join(ids) or 'nothing (no ensemble member trained on it)'}", highlight=False)
    _out.print(res["not_removed"], highlight=False)
    _out.print(f"wrote {results_path(run, targets)} (from cached scores; methods that need the models are left out)",
               highlight=False)


@app.command("eval")
def eval_command(
    run_dir: Path = typer.Argument(..., help="a run directory with config.json and plan.json"),
    data: str | None = typer.Option(None, "--data", help="evaluate on this text instead: a file or glob (txt, jsonl, parquet) or hf:DATASET[:CONFIG][:SPLIT]"),
    name: str | None = typer.Option(None, "--name", help="the new domain's name (default: from the file or dataset)"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="scored tokens of --data (default: the run's eval cap)"),
    text_field: str = typer.Option("text", "--text-field", help="the text column of jsonl / parquet / datasets"),
    without: list[str] = typer.Option([], "--without", help="opt-out: remove this expert, or every expert trained on this domain (repeatable)"),
    methods: str | None = typer.Option(None, "--methods", help="comma-separated, e.g. uniform,routed-top1 (default: the config's)"),
    trust_plugins: bool = typer.Option(False, "--trust-plugins", help="import the plugins the run's config.json names even if this run directory was not started here"),
) -> None:
    """(Re)compute a run's per-domain perplexities from cached scores, or evaluate its ensembles on new text."""
    from hdee.core.lock import run_dir_lock
    from hdee.run import load_run

    if without and data is not None:
        raise ConfigError("--without evaluates the run's own domains; run it without --data")
    if methods is not None and (without or data is not None):
        raise ConfigError("--methods goes with the run's own evaluation, not with --data or --without")
    if data is None and (name is not None or max_tokens is not None):
        raise ConfigError("--name and --max-tokens go with --data")
    run = load_run(run_dir, trust_plugins)  # checked before it is locked: a wrong path creates nothing
    with run_dir_lock(run.layout.root, "eval"):
        _eval(run, data, name, max_tokens, text_field, without, methods)


def _eval(run, data: str | None, name: str | None, max_tokens: int | None, text_field: str, without: list[str],
          methods: str | None = None) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from hdee.evaluation.new_text import evaluate_text
    from hdee.pipeline.operations import evaluate_plan, with_methods

    if without:
        _print_opt_out(run, without)
        return
    if data is None:
        cfg = with_methods(run.cfg, [m.strip() for m in methods.split(",") if m.strip()]) if methods else run.cfg
        results = evaluate_plan(cfg, run.layout, run.plan)
        _out.print(_eval_table(results, "perplexity"))
        _out.print(f"wrote {run.layout.results_json}", highlight=False)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=make_console(stderr=True), transient=True) as bar:
        reading = bar.add_task("tokenizing", total=None)
        scoring = bar.add_task("scoring", total=len(run.experts))
        results = evaluate_text(
            run, data, name, max_tokens, text_field,
            read_progress=lambda n: bar.update(reading, completed=n, description=f"tokenizing: {n:,} tokens"),
            score_progress=lambda eid, done, total: bar.update(scoring, completed=done, description=f"scoring {eid}"),
        )
    for table in _text_tables(results):
        _out.print(table)
    prior, select = results["prior"], results["select"]
    domain = results["domains"][0]["name"]
    _out.print(
        f"The cached-prior methods' prior was estimated on the first {prior['windows']} windows ({prior['tokens']:,} tokens) "
        f"of the text and the main method chosen on the next {select['windows']} ({select['tokens']:,} tokens), "
        f"which are never scored.\nwrote {run.layout.text_results_path(domain)}",
        highlight=False,
    )


@app.command()
def generate(
    targets: list[Path] | None = typer.Argument(None, help="expert directories; with --strategy, one run directory"),
    prompt: str = typer.Option(..., "--prompt", help="text to continue"),
    strategy: str | None = typer.Option(None, "--strategy", help="the run's ensemble of this strategy (its experts, tokenizer and router)"),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="tokenizer.json of the experts (default: the first expert's own)"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy"),
    top_p: float = typer.Option(1.0, "--top-p"),
    method: str | None = typer.Option(None, "--method", help="default: the registry's default method; routed-top1 with --router"),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="experts kept by --method top-k (default 2, or the run's eval.top_k)"),
    seed: int = typer.Option(0, "--seed"),
    router: Path | None = typer.Option(
        None, "--router", help="a router file (RUN_DIR/routers/*.json): load and run only the experts it picks"
    ),
    prior_domain: str | None = typer.Option(None, "--prior-domain", help="with --strategy and a cached-prior method: whose prior"),
) -> None:
    """Sample a continuation of PROMPT from an ensemble's mixture: a run's strategy, expert directories, or a router's picks."""
    from hdee.evaluation.sampling import sample, sample_run

    def emit(piece: str) -> None:  # the continuation streams to stdout as it is sampled
        typer.echo(piece, nl=False)
        sys.stdout.flush()

    started = False

    def stream(piece: str) -> None:
        nonlocal started
        if not started:
            emit(prompt)
            started = True
        emit(piece)

    kw = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed, "stream": stream}
    if strategy is not None:
        if router is not None or tokenizer is not None or len(targets or []) != 1:
            raise EnsembleError("--strategy takes one run directory and finds its experts, tokenizer and router itself")
        from hdee.run import load_run

        done = sample_run(load_run(targets[0]), strategy, prompt, method, prior_domain,
                          **kw, **({"top_k": top_k} if top_k else {}))
    elif prior_domain is not None:
        raise EnsembleError("--prior-domain goes with --strategy")
    elif router is not None:
        if targets:
            raise EnsembleError("give expert directories or --router, not both (the router file names its experts)")
        from hdee.ensemble.routers import load_router, resolve_dir

        dirs = [resolve_dir(e.get("dir", ""), router) for e in load_router(router).meta["experts"]]
        done = sample(dirs, prompt, _tokenizer_of(tokenizer, dirs), method or "routed-top1", router=router, **kw)
    elif not targets:
        raise EnsembleError("give expert directories, a run directory with --strategy, or --router FILE")
    else:
        done = sample(targets, prompt, _tokenizer_of(tokenizer, targets), method or default_method(), top_k=top_k or 2, **kw)
    for line in done.warnings:
        _err.print(line, highlight=False, markup=False)
    if not started:
        emit(prompt)
    typer.echo("")
    sys.stdout.flush()  # the text ends before stderr says anything more
    routed = router is not None or (method or "").startswith("routed-")
    if routed:
        _err.print(f"routed to {', '.join(done.experts)}", highlight=False)
    if done.generation.capped_at is not None:
        _err.print(f"stopped at the experts' context of {done.generation.capped_at} tokens (prompt and continuation together)",
                   highlight=False)
    n = len(done.generation.new_ids)
    _err.print(f"{n} tokens in {done.seconds:.2f} s: {done.tokens_per_second:.1f} tokens/s from {len(done.experts)} "
               f"expert{'s' if len(done.experts) != 1 else ''}" + (" (routing and loading included)" if routed else ""), highlight=False)


def _tokenizer_of(given: Path | None, dirs: list[Path]) -> Path:
    """--tokenizer, else the tokenizer.json every hdee model directory carries."""
    if given is not None:
        return given
    own = Path(dirs[0]) / "tokenizer.json"
    if not own.is_file():
        raise EnsembleError(f"{dirs[0]}: no tokenizer.json; pass --tokenizer")
    return own


@app.command()
def average(
    expert_dirs: list[Path] = typer.Argument(..., help="experts of one architecture"),
    out: Path = typer.Option(..., "--out", help="output model directory"),
    weights: str | None = typer.Option(None, "--weights", help="comma-separated, e.g. 0.2,0.8 (default: equal)"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out directory"),
) -> None:
    """Average the parameters of experts of one architecture into a new HF model directory."""
    from hdee.ensemble import average_experts

    parsed = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise EnsembleError(f"--weights {weights!r}: expected comma-separated numbers") from None
    average_experts(expert_dirs, parsed, out, force=force)
    _out.print(f"wrote {out}")
