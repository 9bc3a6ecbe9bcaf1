"""Render a run's saved results as `report.md` (`hdee.report.markdown`), `report.png`, `curves.png`,
`inference.png` and a rich table.

Nothing here computes a metric: the numbers come from `hdee.report.compare` over `results*.json`,
and the curves (`hdee.report.training_curves`) from each expert's own metrics (hdee.expert_dir).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from hdee.report.compare import baseline_of, comparison, load_repeats, strategy_order  # noqa: E402
from hdee.report.training_curves import plot_curves  # noqa: E402
from hdee.core.errors import HdeeError  # noqa: E402
from hdee.core.fsutil import atomic_write_bytes, atomic_write_text, read_json  # noqa: E402
from hdee.core.layout import RunLayout  # noqa: E402
from hdee.report.markdown import domain_groups, fmt_ppl, render_markdown  # noqa: E402
from hdee.plan.seeds import Vary  # noqa: E402
from hdee.report.results_check import check_results  # noqa: E402
from hdee.config import ExperimentConfig  # noqa: E402
from hdee.report.prereg import load_prereg  # noqa: E402
from hdee.report.regime import regime  # noqa: E402
from hdee.report.routing_front_md import draw_front, ordered_fronts  # noqa: E402


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
    groups = domain_groups(cmp["domains"])
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
    if others:  # a run of the baseline alone has nothing to compare
        axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"method: {cmp['method']} (below zero = better than {base})")
    _save_png(fig, path)


def plot_inference(cmp: dict[str, Any], path: Path) -> None:
    """One panel per ensemble kind: a row per mixing method (labelled with the inference FLOPs per
    token its strategies span), one dot per strategy at its perplexity (all domains, geometric mean)."""
    kinds = {kind: per for kind, per in cmp["inference"].items() if per}
    names = strategy_order(list(dict.fromkeys(n for per in kinds.values() for n in per)))
    rows = max(len(dict.fromkeys(m for e in per.values() for m in e["methods"])) for per in kinds.values())
    fronts = ordered_fronts(cmp)
    height = [1.2 + 0.42 * rows] + ([4.5] if fronts else [])
    fig, axes = plt.subplots(len(height), max(len(kinds), len(fronts)), figsize=(6.2 * max(len(kinds), len(fronts)), sum(height)),
                             squeeze=False, gridspec_kw={"height_ratios": height})
    for ax, (kind, per) in zip(axes[1] if fronts else [], fronts.items()):
        draw_front(ax, kind, *next(iter(per.items())))
    for ax, (kind, per) in zip(axes[0], kinds.items()):
        methods = list(dict.fromkeys(m for e in per.values() if not e.get("single_model") for m in e["methods"]))
        labels = []
        for y, m in enumerate(methods):
            flops = [e["methods"][m]["flops"] for e in per.values() if m in e["methods"] and not e.get("single_model")]
            span = f"{min(flops):.2g}" + (f"-{max(flops):.2g}" if max(flops) > min(flops) * 1.005 else "")
            labels.append(f"{m}  ({span} FLOPs/token)")
            for name, e in per.items():
                v = e["methods"].get(model_alone_method(e, m))
                if v is not None:
                    ax.scatter(v["ppl"]["all"], y, color=f"C{names.index(name) % 10}", s=40, zorder=3,
                               marker="s" if e.get("single_model") else "o")
        ax.set_yticks(range(len(methods)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("perplexity, geometric mean over all domains (lower is better)")
        ax.set_title(f"{kind} ensembles", fontsize=10)
    for i, name in enumerate(names):
        axes[0][len(kinds) - 1].scatter([], [], color=f"C{i % 10}", label=name)
    single = any(e.get("single_model") for per in kinds.values() for e in per.values())
    axes[0][len(kinds) - 1].legend(fontsize=7, loc="best", title="strategy" + (" (square: a single model)" if single else ""), title_fontsize=7)
    for ax in axes[0][len(kinds):].tolist() + (axes[1][len(fronts):].tolist() if fronts else []):
        ax.set_visible(False)
    fig.suptitle("perplexity per mixing method; FLOPs/token = every model a method runs plus its router")
    fig.tight_layout()
    _save_png(fig, path)


def model_alone_method(entry: dict[str, Any], method: str) -> str:
    """A single model (dense) is the same under every method: its first entry stands in for each."""
    if entry.get("single_model"):
        return next(iter(entry["methods"]))
    return method


def rich_table(cmp: dict[str, Any]) -> Table:
    table = cmp["table"]
    strategies = strategy_order(list(table))
    t = Table(title=f"perplexity (test), {cmp['kind']} ensembles, method {cmp['method']} "
                    f"(chosen on {cmp['method_choice']['chosen_on']})", show_lines=False)
    t.add_column("domain")
    t.add_column("tier")
    for s in strategies:
        t.add_column(s, justify="right")
    for group, ds in domain_groups(cmp["domains"]):
        t.add_section()
        for d in ds:
            lo = min(table[s][d["name"]] for s in strategies)
            clear = d["name"] in cmp["kinds"][cmp["kind"]].get("clear_best", {d["name"]})  # the best, where it is clear
            cells = [
                f"[bold green]{fmt_ppl(table[s][d['name']])}[/]"
                if clear and math.isclose(table[s][d["name"]], lo, rel_tol=1e-9)
                else fmt_ppl(table[s][d["name"]])
                for s in strategies
            ]
            t.add_row(d["name"], f"{d.get('tier') or '-'} ({group})", *cells)
    base = cmp.get("baseline")
    if base and cmp.get("wins"):
        wins = ", ".join(f"{s} {w['wins']}" for s, w in cmp["wins"].items())
        some = next(iter(cmp["wins"].values()))
        t.caption = f"domains (of {some['of']}) lower than {base}: {wins}; chance if equal: half of those that differ"
    return t


def _planned_strategies(plan_path: Path) -> list[str] | None:
    """The strategies a plan file names (None when there is no readable plan to compare with)."""
    try:
        ensembles = read_json(plan_path).get("ensembles")
    except (OSError, ValueError, AttributeError):
        return None
    return list(ensembles) if isinstance(ensembles, dict) else None


def write_report(layout: RunLayout, vary: Vary = "domain-phase") -> dict[str, Any]:
    """Rebuild the report over the repeats of kind `vary` (`layout.report_files(vary)`) and curves.png
    from the saved results of `layout`."""
    if not layout.results_json.is_file():
        raise HdeeError(f"{layout.results_json}: no results to report (run `hdee run` first)")
    runs = load_repeats(layout, vary)
    for repeat, results in enumerate(runs):
        check_results(results, layout.results_path(repeat, vary), _planned_strategies(layout.plan_path(repeat, vary)))
    cmp = comparison(runs, vary)
    loaded = load_prereg()
    verdict_vary = loaded[0].design.vary if loaded else vary
    cfg = ExperimentConfig.model_validate(read_json(layout.config_snapshot)) if layout.config_snapshot.is_file() else None
    cmp["regime"] = regime(cmp, runs, load_repeats(layout, "seed-models"), load_repeats(layout, verdict_vary), cfg)
    name = runs[0].get("config", layout.root.name)
    md, png = layout.report_files(vary)
    atomic_write_text(md, render_markdown(cmp, name))
    plot_relative(cmp, png)
    plot_curves(layout, layout.curves_png, _save_png)
    if any(cmp.get("inference", {}).values()):
        plot_inference(cmp, layout.inference_png)
    return cmp
