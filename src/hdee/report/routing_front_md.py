"""The routing front in the report: the routed methods chosen on validation per ensemble, the
whole front of the first swept ensemble, and its panel in `inference.png`
(`hdee.evaluation.routing_front` computes them; repeat 0)."""

from __future__ import annotations

from typing import Any

from hdee.report.compare import strategy_order
from hdee.registry import MIXING_METHODS
from hdee.report.intro import KIND_SHORT

MARKERS = {"tfidf": "o", "hidden": "s", "bigram": "^"}


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio - 1:+.1%}"


def _context(r: dict[str, Any]) -> str:
    """What a point routes on: R prefix tokens, or the text before the window (all of the previous
    window, or its last C tokens; R where a window has none)."""
    entry = MIXING_METHODS.find(r["method"])
    if entry is None or entry.context != "previous":
        return f"R={r['route_tokens']}"
    c = r.get("context_tokens")
    return f"{'previous window' if c is None else f'previous {c} tokens'} (R={r['route_tokens']})"


def _choice(c: dict[str, Any] | None) -> str:
    if c is None:
        return "none within the FLOPs limit |  |  | "
    met = "met" if c["target_met"] else "not met"
    return (f"`{c['method']}` ({c['router']}, {_context(c)}) | {_pct(c['val_ratio'])} / {_pct(c['test_ratio'])} | "
            f"{c['flops_share']:.3f} | {met} (<= {c['ppl_limit'] - 1:+.0%} at <= {c['flops_limit']:.2f}x)")


def _pareto(rows: list[dict[str, Any]], key: str) -> set[int]:
    """Indices of rows no other row beats on both FLOPs and `key` (lower is better)."""
    keep = set()
    for i, r in enumerate(rows):
        if r[key] is None:
            continue
        if not any(o[key] is not None and o["flops_share"] <= r["flops_share"] and o[key] <= r[key]
                   and (o["flops_share"], o[key]) != (r["flops_share"], r[key]) for o in rows):
            keep.add(i)
    return keep


def ordered_fronts(cmp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fronts per ensemble kind in the report's order of kinds, strategies in the tables' order."""
    raw = cmp.get("routing_front") or {}
    kinds = [k for k in cmp.get("inference") or {} if k in raw] + [k for k in raw if k not in (cmp.get("inference") or {})]
    return {k: {n: raw[k][n] for n in strategy_order(list(raw[k]))} for k in kinds if raw[k]}


def front_section(cmp: dict[str, Any]) -> list[str]:
    fronts = ordered_fronts(cmp)
    if not fronts:
        return []
    first = next(iter(next(iter(fronts.values())).values()))
    out = ["", "## Routing front", "",
           f"Every router kind x route tokens x routed method against the all-expert `{first['reference']['method']}` "
           "(trained domains, geometric means; FLOPs per token as a share of the reference's). Two routed methods are chosen "
           "on validation windows alone: the lowest validation perplexity within 1/3 of the reference's FLOPs, and the "
           "same among one-expert methods within 0.15x; their test ratio then says whether the target (+3%, +8%) is met. "
           "No routed method reads a domain label or a per-domain prior.", "",
           "| ensemble | strategy | chosen (val) | ppl vs reference, val / test | FLOPs share | target |",
           "|---|---|---|---:|---:|---|"]
    for kind, per in fronts.items():
        for name, s in per.items():
            out.append(f"| {KIND_SHORT.get(kind, kind)} | {name} | {_choice(s['recommended'])} |")
            out.append(f"| {KIND_SHORT.get(kind, kind)} | {name}, one expert | {_choice(s['top1'])} |")
    for kind, per in fronts.items():
        name, s = next(iter(per.items()))
        rows = sorted(s["points"], key=lambda r: (r["flops_share"], r["method"], r["router"], r["route_tokens"]))
        on_front = _pareto(rows, "val_mean_log_ppl")
        out += ["", f"The whole front of {name} ({KIND_SHORT.get(kind, kind)} ensemble); * on the validation Pareto front.", "",
                "| router | routed on | method | temperature | FLOPs share | ppl vs reference, val | test |",
                "|---|---|---|---:|---:|---:|---:|"]
        for i, r in enumerate(rows):
            temp = "-" if r.get("temperature") is None else f"{r['temperature']:.3g}"
            out.append(f"| {r['router']} | {_context(r)} | {r['method']}{' *' if i in on_front else ''} | {temp} | "
                       f"{r['flops_share']:.3f} | {_pct(r['val_ratio'])} | {_pct(r['test_ratio'])} |")
    return out


def draw_front(ax: Any, kind: str, name: str, summary: dict[str, Any]) -> None:
    """One ensemble's front: test perplexity ratio against FLOPs share, the chosen points starred."""
    from matplotlib import ticker

    methods = sorted({r["method"] for r in summary["points"]})
    for r in summary["points"]:
        if r["test_ratio"] is None:
            continue
        ax.scatter(r["flops_share"], r["test_ratio"], marker=MARKERS.get(r["router"], "D"), s=28,
                   color=f"C{methods.index(r['method']) % 10}", alpha=0.8, zorder=3)
    for c, label in ((summary["recommended"], "chosen on val"), (summary["top1"], "chosen on val, one expert")):
        if c is not None and c["test_ratio"] is not None:
            ax.scatter(c["flops_share"], c["test_ratio"], marker="*", s=160, facecolor="none", edgecolor="k", zorder=4, label=label)
    ax.axhline(1.03, color="grey", ls="--", lw=0.8)
    ax.axvline(1 / 3, color="grey", ls="--", lw=0.8)
    ax.axhline(1.08, color="grey", ls=":", lw=0.8)
    ax.axvline(0.15, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xticks([0.1, 0.15, 0.2, 1 / 3, 0.5, 1.0, 2.0])
    ax.set_xlabel(f"inference FLOPs per token / {summary['reference']['method']}'s")
    ax.set_ylabel("test perplexity / reference's (trained domains)")
    ax.set_title(f"routing front: {name}, {KIND_SHORT.get(kind, kind)} ensemble", fontsize=10)
    for i, m in enumerate(methods):
        ax.scatter([], [], color=f"C{i % 10}", label=m, s=20)
    for router, marker in MARKERS.items():
        if any(r["router"] == router for r in summary["points"]):
            ax.scatter([], [], color="grey", marker=marker, label=router, s=20)
    ax.legend(fontsize=6, loc="best")
    ax.grid(alpha=0.3)
