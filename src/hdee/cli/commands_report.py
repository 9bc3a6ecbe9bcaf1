"""`hdee report`."""

from __future__ import annotations

from pathlib import Path

import typer

from hdee.cli.app import app
from hdee.cli.output import make_console
from hdee.core.errors import HdeeError
from hdee.core.layout import RunLayout
from hdee.core.lock import run_dir_lock


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run directory with results/results.json"),
    vary: str = typer.Option("domain-phase", "--vary", help="which repeats: domain-phase or seed-models (as `hdee run --vary`)"),
    trust_plugins: bool = typer.Option(False, "--trust-plugins", help="import the plugins the run's config.json names even if this run directory was not started here"),
) -> None:
    """Rebuild the report (report.md, report.png; report-seed-models.* with --vary seed-models) and curves.png
    from a run's saved results (no recomputation)."""
    from hdee.pipeline.operations import report_run
    from hdee.plan.seeds import check_vary
    from hdee.report.write import rich_table

    check_vary(vary)
    if not run_dir.is_dir():
        raise HdeeError(f"{run_dir}: run directory not found")
    with run_dir_lock(run_dir, "report"):
        cmp = report_run(run_dir, vary, trust_plugins)
    layout = RunLayout(run_dir)
    md, png = layout.report_files(vary)
    console = make_console()
    console.print(rich_table(cmp))
    console.print(f"wrote {md}, {png}, {layout.curves_png}")


@app.command("compare")
def compare_runs(
    run_a: Path = typer.Argument(..., help="the first run directory (the reference)"),
    run_b: Path = typer.Argument(..., help="the second run directory"),
    method: str | None = typer.Option(None, "--method", help="mixing method of the config's ensemble kind (default: the one RUN_A chose)"),
) -> None:
    """Two runs side by side: per strategy and domain, each run's test perplexity and the change from A to B."""
    from rich.table import Table

    from hdee.report.run_diff import diff_runs

    diff = diff_runs(run_a, run_b, method)
    console = make_console()
    for kind, per in diff["kinds"].items():
        summary = Table(title=f"{kind} ensembles, {per['method']}: geometric-mean test perplexity over {len(diff['domains'])} domains")
        for col in ("strategy", "A", "B", "B vs A", "domains lower in B"):
            summary.add_column(col, justify="left" if col == "strategy" else "right")
        for s, row in per["strategies"].items():
            m = row["mean"]
            summary.add_row(s, f"{m['a']:.3f}", f"{m['b']:.3f}", f"{m['change']:+.2%}", f"{row['lower_in_b']} of {len(diff['domains'])}")
        console.print(summary)
        table = Table(title=f"{kind} ensembles, {per['method']}: test perplexity per domain (A / B, change)")
        table.add_column("domain")
        for s in per["strategies"]:
            table.add_column(s, justify="right")
        for d in diff["domains"]:
            cells = [per["strategies"][s]["domains"][d] for s in per["strategies"]]
            table.add_row(d, *(f"{c['a']:.3f} / {c['b']:.3f} ({c['change']:+.1%})" for c in cells))
        console.print(table)
        if per["method_b_chose"] != per["method"]:
            console.print(f"B chose {per['method_b_chose']} for its {kind} ensembles; both are shown under {per['method']}.", highlight=False)
    for side, names in (("A", diff["only_a"]), ("B", diff["only_b"])):
        if names:
            console.print(f"only in {side} (not compared): {', '.join(names)}", highlight=False)
    console.print(f"A = {diff['a']}, B = {diff['b']}; change = B / A - 1 (negative: B is lower)", highlight=False)


@app.command()
def power(
    run_dir: Path = typer.Argument(..., help="a run directory with validation pilots: results of several repeats"),
    margin: float = typer.Option(..., "--margin", min=0.0, help="equivalence margin in nats/token"),
    vary: str = typer.Option("seed-models", "--vary", help="which repeats measure the noise (as `hdee run --vary`)"),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="level of each one-sided test"),
    target: float = typer.Option(0.8, "--power", min=0.5, max=0.999, help="chance of showing equivalence when there is none to find"),
) -> None:
    """The repeats the pre-registered TOST needs: the validation endpoint's spread over a run's repeats."""
    from hdee.plan.seeds import check_vary
    from hdee.report.compare import comparison, load_repeats, method_for
    from hdee.report.prereg import load_prereg
    from hdee.report.verdict import power_table

    kind = check_vary(vary)
    if margin <= 0:
        raise HdeeError("--margin must be above 0")
    layout = RunLayout(run_dir)
    pilot = layout.pilot_path(0).is_file()  # validation pilots first: they hold no test number
    if not pilot and not layout.results_json.is_file():
        raise HdeeError(f"{layout.results_json}: no results (run `hdee run --pilot` or `hdee run` first)")
    runs = load_repeats(layout, kind, pilot=pilot)
    if len(runs) < 2:
        raise HdeeError(f"{run_dir}: {len(runs)} repeat(s) of kind {kind}; the noise needs at least 2 (`hdee run --pilot --seeds N --vary {kind}`)")
    if pilot:
        loaded = load_prereg()
        base = loaded[0].endpoint.baseline if loaded else "MHo-IHo"
        if base not in runs[0]["ensembles"]:
            raise HdeeError(f"{run_dir}: the baseline {base} is not among the pilots' strategies")
        cmp = {"kind": runs[0]["ensemble"], "method": method_for([r["method_choice"] for r in runs])["method"]}
    else:
        cmp = comparison(runs, kind)
        base = cmp.get("baseline")
        if base is None:
            raise HdeeError(f"{run_dir}: no baseline strategy among the results")
    rows = power_table(runs, cmp["kind"], cmp["method"], base, margin, alpha, target)
    console = make_console()
    console.print(f"validation endpoint (mean trained-domain log-perplexity minus {base}'s, method {cmp['method']}) over "
                  f"{len(runs)} repeats; TOST within ±{margin:g} at α = {alpha:g}, power {target:g}:", highlight=False)
    for s, r in rows.items():
        console.print(f"  {s}: mean {r['mean']:+.4f}, sd {r['sd']:.4f} -> {r['needed']} repeats", highlight=False)
