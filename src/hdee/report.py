"""Render a run's saved results as `report.md`, `report.png`, `curves.png` and a rich table.

Nothing here computes a metric: the numbers come from `hdee.compare` over `results*.json`,
and the curves from each expert's own metrics (hdee.expert_dir).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from hdee.compare import baseline_of, comparison, load_repeats, strategy_order  # noqa: E402
from hdee.errors import HdeeError  # noqa: E402
from hdee.expert_dir import METRICS, read_metrics  # noqa: E402
from hdee.fsutil import atomic_write_bytes, atomic_write_text  # noqa: E402
from hdee.layout import RunLayout  # noqa: E402


def _fmt_ppl(x: float) -> str:
    return f"{x:.2f}" if x < 1000 else f"{x:.3g}"


def _fmt_flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _domain_groups(domains: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    trained = [d for d in domains if d["role"] == "train"]
    heldout = [d for d in domains if d["role"] != "train"]
    return [(g, ds) for g, ds in (("trained", trained), ("held-out", heldout)) if ds]


def _markdown_table(table: dict[str, dict[str, float]], domains: list[dict[str, Any]], cell=None) -> list[str]:
    strategies = strategy_order(list(table))
    lines = [
        "| domain | tier | " + " | ".join(strategies) + " |",
        "|---|---|" + "---:|" * len(strategies),
    ]
    for group, ds in _domain_groups(domains):
        lines.append(f"| *{group}* | |" + " |" * len(strategies))
        for d in ds:
            name = d["name"]
            lo = min(table[s][name] for s in strategies)
            cells = []
            for s in strategies:
                v = table[s][name]
                txt = cell(s, name) if cell else _fmt_ppl(v)
                cells.append(f"**{txt}**" if math.isclose(v, lo, rel_tol=1e-9) else txt)
            lines.append(f"| {name} | {d.get('tier') or '-'} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(cmp: dict[str, Any], run_name: str) -> str:
    method = cmp["method"]
    head = cmp["headline"]
    domains = cmp["domains"]
    out = [f"# hdee report: {run_name}", ""]
    out.append(
        f"Perplexity on the test split of every domain (lower is better), mixing method "
        f"`{method}` (the best over all domains). Best per domain in bold."
    )
    out.append("")
    rep = cmp.get("repeats")
    if rep:
        ms = rep["mean_std"]
        out.append(f"Mean ± std over {rep['repeats']} repeats of the domain phase.")
        out.append("")
        out += _markdown_table(
            cmp["table"], domains, cell=lambda s, d: f"{_fmt_ppl(ms[s][d][0])} ± {ms[s][d][1]:.2f}"
        )
    else:
        out += _markdown_table(cmp["table"], domains)
    out.append("")
    out.append(
        f"**heterogeneous best in {head['wins']} of {head['of']} domains** "
        f"(among {', '.join(strategy_order(head['compared']))}; ties count, as in the paper)."
    )
    for ref in head.get("references", []):
        out.append("")
        out.append(
            f"The compute-matched {ref} model is lower than every ensemble in {len(head[f'{ref}_best'])} of "
            f"{head['of']} domains."
        )
    if rep:
        out.append("")
        out.append(
            f"Per repeat: {', '.join(map(str, rep['wins_per_repeat']))} wins. "
            f"Heterogeneous wins over `{baseline_of(list(cmp['table']))}` that survive the noise (paired log-perplexity "
            f"difference above two standard errors): {len(rep['wins_surviving_noise'])} of {len(domains)}"
            + (f" ({', '.join(rep['wins_surviving_noise'])})." if rep["wins_surviving_noise"] else ".")
        )
    if "mean_log_ppl" in cmp:
        out += ["", "| strategy | mean log-perplexity (all domains) | seed FLOPs | domain-phase FLOPs |", "|---|---:|---:|---:|"]
        for s in strategy_order(list(cmp["mean_log_ppl"])):
            meta = cmp["flops"].get(s, {})
            mlp = cmp["mean_log_ppl"][s]
            if rep:
                m, sd = rep["mean_log_ppl"][s]
                mlp_txt = f"{m:.4f} ± {sd:.4f}"
            else:
                mlp_txt = f"{mlp:.4f}"
            out.append(
                f"| {s} | {mlp_txt} | {_fmt_flops(meta.get('seed_flops'))} | {_fmt_flops(meta.get('domain_flops'))} |"
            )
    for name, alloc in cmp.get("decisions", {}).items():
        sm = alloc["summary"]
        out += [
            "",
            f"## `{name}`: its allocation, predicted against measured",
            "",
            f"Objective `{sm['objective']}`; pilots {_fmt_flops(sm['pilot_flops'])} + experts "
            f"{_fmt_flops(sm['expert_flops'])} = {_fmt_flops(sm['total_flops'])} FLOPs "
            f"({sm['off_budget']:+.2%} against the budget {_fmt_flops(sm['budget_flops'])}). Losses are the "
            "expert's validation loss (nats/token) on its own domain right after it trained.",
            "",
            "| lineage | iteration | domain | size | steps | predicted loss | measured loss |",
            "|---|---:|---|---|---:|---:|---:|",
        ]
        for r in alloc["rows"]:
            measured = "-" if r["measured_loss"] is None else f"{r['measured_loss']:.3f}"
            out.append(
                f"| {r['lineage']} | {r['iteration']} | {r['domain']} | {r['size']} | {r['steps']} | "
                f"{r['predicted_loss']:.3f} | {measured} |"
            )
        if alloc["mean_abs_error"] is not None:
            out += ["", f"Mean absolute error of the predictions: {alloc['mean_abs_error']:.3f} nats/token."]
    out += ["", "## Every mixing method", ""]
    for m, table in cmp["per_method"].items():
        out += [f"### `{m}`", ""] + _markdown_table(table, domains) + [""]
    if cmp.get("seeds"):
        out += ["## Seed models", "", "Perplexity of each seed model on every domain, before any branching.", ""]
        out += _markdown_table(cmp["seeds"], domains) + [""]
    shift = cmp.get("seed_shift")
    if shift:
        out += [
            "## Experts against their seed",
            "",
            "Perplexity on the expert's own domain before branching (the seed of its size) and after.",
            "",
            "| expert | domain | size | steps | seed ppl | expert ppl | change |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in shift:
            change = r["expert_ppl"] / r["seed_ppl"] - 1
            out.append(
                f"| {r['expert']} | {r['domain']} | {r['size']} | {r['steps']} | "
                f"{_fmt_ppl(r['seed_ppl'])} | {_fmt_ppl(r['expert_ppl'])} | {change:+.1%} |"
            )
    return "\n".join(out) + "\n"


def _save_png(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_relative(cmp: dict[str, Any], path: Path) -> None:
    """Per-domain perplexity relative to the baseline, trained and held-out domains side by side."""
    table = cmp["table"]
    base = baseline_of(list(table)) or strategy_order(list(table))[0]
    others = [s for s in strategy_order(list(table)) if s != base]
    groups = _domain_groups(cmp["domains"])
    fig, axes = plt.subplots(1, len(groups), figsize=(6 + 0.45 * len(cmp["domains"]), 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [len(ds) for _, ds in groups]})
    width = 0.8 / max(1, len(others))
    for ax, (group, ds) in zip(axes[0], groups):
        for i, s in enumerate(others):
            ys = [table[s][d["name"]] / table[base][d["name"]] - 1 for d in ds]
            ax.bar([j + i * width for j in range(len(ds))], ys, width, label=s)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks([j + width * (len(others) - 1) / 2 for j in range(len(ds))])
        ax.set_xticklabels([d["name"] for d in ds], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{group} domains")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes[0][0].set_ylabel(f"perplexity relative to {base}")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"method: {cmp['method']} (below zero = better than {base})")
    _save_png(fig, path)


def plot_curves(experts_dir: Path, path: Path) -> None:
    """Validation loss against training FLOPs for every expert (one line per metrics.jsonl)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    n = 0
    for metrics in sorted(experts_dir.glob(f"*/{METRICS}")):
        pts = [(row.get("flops", 0), row["val_loss"]) for row in read_metrics(metrics) if row.get("val_loss") is not None]
        if len(pts) < 2:
            continue
        xs, ys = zip(*sorted(pts))
        kind = metrics.parent.name.split("-")[0]
        ax.plot(xs, ys, lw=1.2 if kind != "seed" else 2.0, alpha=0.8, label=metrics.parent.name)
        n += 1
    ax.set_xlabel("training FLOPs of the job (6 x non-embedding params x tokens)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"validation loss of {n} training jobs")
    if 0 < n <= 30:
        ax.legend(fontsize=6, ncol=2)
    _save_png(fig, path)


def rich_table(cmp: dict[str, Any]) -> Table:
    table = cmp["table"]
    strategies = strategy_order(list(table))
    t = Table(title=f"perplexity (test), method {cmp['method']}", show_lines=False)
    t.add_column("domain")
    t.add_column("tier")
    for s in strategies:
        t.add_column(s, justify="right")
    for group, ds in _domain_groups(cmp["domains"]):
        t.add_section()
        for d in ds:
            lo = min(table[s][d["name"]] for s in strategies)
            cells = [
                f"[bold green]{_fmt_ppl(table[s][d['name']])}[/]"
                if math.isclose(table[s][d["name"]], lo, rel_tol=1e-9)
                else _fmt_ppl(table[s][d["name"]])
                for s in strategies
            ]
            t.add_row(d["name"], f"{d.get('tier') or '-'} ({group})", *cells)
    h = cmp["headline"]
    t.caption = f"heterogeneous best in {h['wins']} of {h['of']} domains"
    return t


def write_report(layout: RunLayout) -> dict[str, Any]:
    """Rebuild report.md, report.png and curves.png from the saved results of `layout`."""
    if not layout.results_json.is_file():
        raise HdeeError(f"{layout.results_json}: no results to report (run `hdee run` first)")
    runs = load_repeats(layout)
    cmp = comparison(runs)
    name = runs[0].get("config", layout.root.name)
    atomic_write_text(layout.report_md, render_markdown(cmp, name))
    plot_relative(cmp, layout.report_png)
    plot_curves(layout.experts_dir, layout.curves_png)
    return cmp
