"""The report's top sections: whether the run can answer the question (the regime gates), the
pre-registered verdict per strategy, and compute counted both ways. Renders `hdee.report.regime`'s output
and the plan's FLOPs; computes nothing."""

from __future__ import annotations

from typing import Any

from hdee.report.compare import strategy_order

CANNOT = "This run cannot answer the question, because"


def _mark(ok: bool) -> str:
    return "pass" if ok else "**fail**"


def _flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _ci(ci: tuple[float, float, float] | list[float] | None) -> str:
    return "-" if ci is None else f"{ci[0]:+.4f} [{ci[1]:+.4f}, {ci[2]:+.4f}]"


def opening(reg: dict[str, Any] | None) -> list[str]:
    """The report's first words when a gate failed: no verdict, and why."""
    if not reg or reg["gates"]["passed"]:
        return []
    return [f"**{CANNOT}** " + "; ".join(reg["gates"]["why"]) + ". The tables below are measurements, not a verdict.", ""]


def gates(reg: dict[str, Any] | None) -> list[str]:
    if not reg:
        return []
    g = reg["gates"]
    a, b, c = g["a"], g["b"], g["c"]
    out = ["## Regime gates (validation data)", "",
           ("Whether this run is in the regime where its comparison means anything. All on validation windows; "
            "log-perplexity in nats/token, mean over the trained domains."), "",
           "| gate | result | numbers |", "|---|---|---|"]
    for s in strategy_order(list(a["rows"])):
        r = a["rows"][s]
        nums = (f"ensemble {r['ensemble']:.4f} vs its seed(s) {r['seeds']:.4f} ({r['diff']:+.4f})" if r["measurable"]
                else "not measurable (no validation scores of its seeds)")
        out.append(f"| (a) `{s}` beats its own seed(s), method `{a['method']}` | {_mark(r['passed'])} | {nums} |")
    if b["measurable"]:
        nums = (f"{b['sizes'][1]} beats {b['sizes'][0]} by {b['mean']:.4f} ± {b['sd']:.4f} (SD over {b['draws']} seed draws); "
                f"needs ≥ {b['sds']:g} SD")
    else:
        nums = f"not measurable: {b['why']}"
    whose = f" (the sizes of `{b['strategy']}`)" if b.get("strategy") else ""
    out.append(f"| (b) largest seed beats smallest on the seed corpus{whose} | {_mark(b['passed'])} | {nums} |")
    for name, row in (b.get("spreads") or {}).items():  # beside the gate: the other spreads' sizes
        nums = (f"{row['sizes'][1]} beats {row['sizes'][0]} by {row['mean']:.4f} ± {row['sd']:.4f} over {row['draws']} draws"
                if row["measurable"] else f"not measurable: {row['why']}")
        out.append(f"| beside (b): the sizes of `{name}` | {'≥' if row['passed'] else '<'} {row['sds']:g} SD | {nums} |")
    worst = max(c["failed"], key=lambda r: r["diff"], default=None)
    out.append(f"| (c) every expert beats its parent on its own domain | {_mark(c['passed'])} | {c['beaten']} of {c['experts']}"
               + (f"; worst {worst['expert']} on {worst['domain']} {worst['diff']:+.4f}" if worst else "") + " |")
    if g["forgetting"]:
        out += ["", "Out-of-lineage forgetting (beside the gates): final experts' validation log-perplexity on the trained "
                "domains outside their lineage, minus their seed's (positive = forgot): "
                + ", ".join(f"`{s}` {g['forgetting'][s]:+.4f}" for s in strategy_order(list(g["forgetting"]))) + "."]
    return out + [""]


def tiers(reg: dict[str, Any] | None) -> list[str]:
    t = (reg or {}).get("tiers")
    if not t:
        return []
    out = ["## Tiers: hand-set against measured", "",
           ("The hand-set tiers agree with the measured returns." if t["agree"] else
            "**The hand-set tiers disagree with the measured returns**: the extra compute does not go where it gains most.")
           + " Return: validation log-perplexity gained on the expert's own domain per step, mean over the lineage's "
           "experts; the tiers dealt again by it (least return, least compute).", "",
           "| lineage | hand-set tier | return per step | measured tier |", "|---|---|---:|---|"]
    out += [f"| {r['lineage']} | {r['hand']} | {r['return']:.5f} | {r['measured']} |" for r in t["rows"]]
    return out + [""]


def spreads(reg: dict[str, Any] | None) -> list[str]:
    trends = (reg or {}).get("spreads")
    if not trends:
        return []
    out = ["## How much heterogeneity: the endpoint across size spreads", "",
           ("Spread: largest over smallest expert FLOPs per token in the paper's count (6 x non-embedding parameters; "
            "the hardware count, LM head included, gives smaller ratios). Endpoint: mean trained-domain log-perplexity minus "
            "the baseline's, per repeat. Trend: least-squares slope of the endpoint on log(spread) with its 95% interval "
            "(negative = more heterogeneity helps)."), "",
           "| strategy | spreads: endpoint (mean over repeats) | slope on log(spread) | p |", "|---|---|---|---:|"]
    for fam, t in trends.items():
        pts = ", ".join(f"`{r['strategy']}` {r['spread']:.2f}: {sum(r['endpoints']) / len(r['endpoints']):+.4f}" for r in t["rows"])
        if t["testable"]:
            out.append(f"| {fam} | {pts} | {t['slope']:+.4f} [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}] (df {t['df']}) | {t['p']:.3g} |")
        else:
            out.append(f"| {fam} | {pts} | not testable: {t['points']} points for two parameters (run repeats) | - |")
    return out + [""]


def verdict(reg: dict[str, Any] | None) -> list[str]:
    if not reg:
        return []
    v = reg.get("verdict")
    if v is None:
        return ["## Verdict", "", "No pre-registration found (`docs/preregistration.toml`): no verdict.", ""]
    given = reg["gates"]["passed"]
    out = ["## Verdict (pre-registered)", "",
           f"Primary endpoint: each strategy's mean log-perplexity over the trained domains (test split, "
           f"{v['kind']} ensembles, method `{v['method']}`) minus `{v['baseline']}`'s, in nats/token (negative = better; "
           f"a log ratio of geometric-mean perplexities). Paired {v['confidence']:.0%} t interval over {v['repeats']} "
           f"repeat(s), TOST of equivalence within ±{v['margin']:g}, and the {v['confidence']:.0%} bootstrap interval over "
           f"whole test documents ({v['documents']} in the trained domains, each domain resampled apart; a domain of one "
           "document adds no spread). Rule: supports HDEE if the interval lies below 0; refutes "
           "it if above 0 or equivalent by the TOST (p < " + f"{v['alpha']:g}); inconclusive otherwise.", ""]
    notes = []
    if v["provisional"]:
        notes.append("provisional values (" + ", ".join(v["provisional"]) + ") are not yet set from a power calculation")
    if v["short"]:
        notes.append("this run has " + " and ".join(v["short"]))
    if v["changed"]:
        notes.append("the pre-registration changed after these results were made (sha256 differs)")
    if notes:
        out += ["Caveats: " + "; ".join(notes) + ".", ""]
    if v.get("missing_baseline"):
        return out + [f"The baseline `{v['baseline']}` is not among this run's strategies: no verdict.", ""]
    out += ["| strategy | endpoint per repeat | paired interval | TOST p | document interval | verdict |",
            "|---|---|---|---:|---|---|"]
    for s in strategy_order(list(v["strategies"])):
        r = v["strategies"][s]
        p = "-" if r["tost_p"] is None else f"{r['tost_p']:.3g}"
        word = r["verdict"] if given else "none (gates failed)"
        out.append(f"| {s} | {', '.join(f'{d:+.4f}' for d in r['diffs'])} | {_ci(r['ci'])} | {p} | {_ci(r['doc_ci'])} | {word} |")
    return out + ["", f"Pre-registration sha256 `{v['sha256'][:16]}…`.", ""]


def compute_table(cmp: dict[str, Any]) -> list[str]:
    """Mean log-perplexity per strategy with seed, domain-phase and total FLOPs in both counts: a
    strategy pays for every seed model its sizes need (MHe-IHo for three where the baseline needs one)."""
    k = cmp["kinds"][cmp["kind"]]
    meta0 = next(iter(cmp["flops"].values()), {})
    chosen = meta0.get("flops_convention", "paper")
    convs = sorted(meta0.get("flops_by") or {chosen: None}, key=lambda c: c != chosen)
    head = "| strategy | mean log-perplexity (all domains) | " + " | ".join(
        f"seed FLOPs ({c}) | domain-phase FLOPs ({c}{', budget' if c == chosen else ''}) | seed + domain ({c})" for c in convs) + " |"
    out = [head, "|---|---:|" + "---:|---:|---:|" * len(convs)]
    for s in strategy_order(list(k["mean_log_ppl"])):
        m, sd = k["mean_log_ppl"][s]
        meta = cmp["flops"].get(s, {})
        by = meta.get("flops_by") or {chosen: {"seed": meta.get("seed_flops"), "domain": meta.get("domain_flops")}}
        cells = []
        for c in convs:
            seed, dom = by.get(c, {}).get("seed"), by.get(c, {}).get("domain")
            total = None if seed is None or dom is None else seed + dom
            cells.append(f"{_flops(seed)} | {_flops(dom)} | {_flops(total)}")
        out.append(f"| {s} | {m:.4f}" + (f" ± {sd:.4f}" if k["repeats"] > 1 else "") + " | " + " | ".join(cells) + " |")
    return out
