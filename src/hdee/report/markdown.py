"""`report.md`: the comparison (`hdee.report.compare.comparison`) as markdown, section by section.

Nothing here computes a metric; every number is one of the comparison's. Tables mark what is not
comparable: `best-expert` (a test-set oracle), `product` (fewer windows), routed methods (FLOPs).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from hdee.report.compare import NOT_REMOVED, strategy_order
from hdee.core.provenance import PACKAGES
from hdee.report.regime_md import compute_table, gates, opening, spreads, tiers, verdict
from hdee.registry import MIXING_METHODS
from hdee.report.intro import KIND_NAMES, KIND_SHORT, intro
from hdee.report.routing_front_md import front_section


def fmt_ppl(x: float) -> str:
    return f"{x:.2f}" if x < 1000 else f"{x:.3g}"


def _flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _p(x: float) -> str:
    return f"{x:.2g}" if x >= 1e-4 else "<1e-4"


def domain_groups(domains: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    trained = [d for d in domains if d["role"] == "train"]
    heldout = [d for d in domains if d["role"] != "train"]
    return [(g, ds) for g, ds in (("trained", trained), ("held-out", heldout)) if ds]


def markdown_table(table: dict[str, dict[str, float]], domains: list[dict[str, Any]],
                   cell: Callable[[str, str], str] | None = None, bold: bool | set[str] = True) -> list[str]:
    """`bold`: mark each domain's lowest value; a set: only in those domains (where the best is clear)."""
    strategies = strategy_order(list(table))
    lines = ["| domain | tier | " + " | ".join(strategies) + " |", "|---|---|" + "---:|" * len(strategies)]
    for group, ds in domain_groups(domains):
        lines.append(f"| *{group}* | |" + " |" * len(strategies))
        for d in ds:
            name = d["name"]
            lo = min(table[s][name] for s in strategies)
            cells = []
            for s in strategies:
                txt = cell(s, name) if cell else fmt_ppl(table[s][name])
                best = bold is True or (isinstance(bold, set) and name in bold)
                cells.append(f"**{txt}**" if best and math.isclose(table[s][name], lo, rel_tol=1e-9) else txt)
            lines.append(f"| {name} | {d.get('tier') or '-'} | " + " | ".join(cells) + " |")
    return lines


def method_label(method: str, cmp: dict[str, Any]) -> str:
    """`method` with what makes it incomparable, when anything does (every table says it)."""
    entry = MIXING_METHODS.find(method)
    if entry is not None and entry.oracle:
        return f"`{method}` (test-set oracle: each domain's best expert picked on the test windows themselves; a reference, not a method)"
    if entry is not None and entry.routed:
        how = ("routed on the text before each window (reset at documents; a window starting one: its first tokens)"
               if entry.context == "previous" else "routed: the prefix model scores each window's first tokens")
        weighed = ", weighed by the router's softmax" if entry.weights == "router" else ""
        return f"`{method}` ({how}, then only the {entry.routed} expert(s) a router picks{weighed}; see Inference cost)"
    if entry is not None and not entry.cached:
        windows = sorted(set(cmp.get("product_windows", {}).values()) - {0})
        n = max((d.get("windows", 0) for d in cmp["domains"]), default=0)
        return f"`{method}` (scored on the first {'/'.join(map(str, windows)) or '?'} test windows per domain, the others on up to {n})"
    return f"`{method}`"


def choice_text(choice: dict[str, Any]) -> str:
    if choice["chosen_on"] == "config":
        return "fixed in the config (`eval.method`)"
    pooled = ", pooled over the repeats" if choice.get("pooled") else ""
    return ("chosen on validation windows disjoint from those its prior is estimated on: lowest mean log-perplexity "
            f"over every domain and ensemble{pooled}; the test split plays no part")


def main_table(k: dict[str, Any], domains: list[dict[str, Any]]) -> list[str]:
    if k["repeats"] > 1:
        ms = k["mean_std"]
        return markdown_table(k["table"], domains, cell=lambda s, d: f"{fmt_ppl(ms[s][d][0])} ± {ms[s][d][1]:.3f}",
                              bold=k.get("clear_best", True))
    return markdown_table(k["table"], domains, bold=k.get("clear_best", True))


def headline(k: dict[str, Any], total: bool = False) -> list[str]:
    """Wins of each strategy against the baseline beside the chance rate, then the paper's count."""
    out = []
    base, n = k.get("baseline"), len(k["table"][next(iter(k["table"]))])
    if base and k.get("wins"):
        tests = {r["strategy"]: r for r in (k["tests"]["overall"] or [])}
        out += [f"**Against `{base}` at equal {'total' if total else 'domain-phase'} compute**, per strategy: in how many of {n} domains its perplexity is "
                f"lower, beside the count expected by chance if the two were equally good (half the domains where they "
                "differ) and a one-sided sign test.", "",
                "| strategy | lower than " + base + " | chance | sign-test p | Δ mean log-ppl | Holm p (repeats) |",
                "|---|---:|---:|---:|---:|---:|"]
        for s in strategy_order(list(k["wins"])):
            w = k["wins"][s]
            ties = f" ({w['ties']} tied)" if w["ties"] else ""
            t = tests.get(s)
            diff = k["mean_log_ppl"][s][0] - k["mean_log_ppl"][base][0]
            holm = "-" if t is None else _p(t["p_holm"]) + (" *" if t["significant"] and t["diff"] < 0 else "")
            out.append(f"| {s} | {w['wins']} of {w['of']}{ties} | {w['chance']:.1f} | {_p(w['sign_p'])} | {diff:+.4f} | {holm} |")
        out.append("")
    h = k["headline"]
    out.append(
        f"Paper's count (secondary), among the ensembles only: in {h['wins']} of {h['of']} domains a heterogeneous ensemble "
        f"is the lowest of {', '.join(strategy_order(h['compared']))} (ties count, as in the paper). Chance alone gives "
        f"{h['chance']:.1f} of {h['of']} if all {len(h['compared'])} were equally good."
        + (f" Per repeat: {', '.join(map(str, k['per_repeat_wins']))}." if k["repeats"] > 1 else "")
    )
    for ref in h.get("references", []):
        out += ["", f"Outside that count, the compute-matched `{ref}` model (a single model, not an ensemble) is lower than "
                f"every ensemble, heterogeneous or not, in {len(h[f'{ref}_best'])} of {h['of']} domains."]
    return out


def noise(k: dict[str, Any], domains: list[dict[str, Any]]) -> list[str]:
    """Training noise (paired t-tests over repeats, Holm) and test-window noise (bootstrap CIs)."""
    base, tests = k.get("baseline"), k.get("tests")
    if not base or not tests:
        return []
    out = ["## Per-domain tests (secondary)", ""]
    if tests["cells"] is None:
        out += ["One repeat: the training noise is not tested (run with `--seeds N` for paired t-tests over repeats).", ""]
    else:
        def listed(cells: list[dict[str, Any]]) -> str:
            return (": " + ", ".join(f"{c['strategy']} on {c['domain']}" for c in cells)) if cells else ""

        better = [c for c in tests["cells"] if c["significant"] and c["diff"] < 0]
        worse = [c for c in tests["cells"] if c["significant"] and c["diff"] > 0]
        out += [
            f"Paired t-test over {tests['repeats']} repeats of each strategy's log-perplexity difference to `{base}` "
            f"(two-sided, df = {tests['df']}, t critical value {tests['t_crit']:.2f} at α = {tests['alpha']} before "
            f"correction), Holm-corrected over all {tests['family']} (strategy, domain) pairs: {len(better)} significant "
            f"improvements{listed(better)}; {len(worse)} significant deteriorations{listed(worse)}.",
            "",
        ]
    ci = k.get("window_ci")
    if ci:
        marks = {(c["strategy"], c["domain"]) for c in (tests["cells"] or []) if c["significant"]}
        table = {s: {d: v[0] for d, v in per.items()} for s, per in ci.items()}

        def cell(s: str, d: str) -> str:
            m, lo, hi = ci[s][d]
            return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" + (" *" if (s, d) in marks else "")

        out += [
            f"Difference to `{base}` in log-perplexity per domain (negative = lower), with its {k['ci_level']:.0%} bootstrap "
            + ("interval over whole test documents" if k.get("ci_unit") == "documents" else "interval over the test windows")
            + (f" (each {k.get('ci_unit', 'windows')[:-1]}'s loss averaged over the repeats first)" if k["repeats"] > 1 else "")
            + ("; a domain of one test document has no spread, so its interval is its point"
               if k.get("ci_unit") == "documents" else "; windows of one document are not independent, so the intervals are if anything too narrow")
            + ("; * = significant in the corrected t-test." if tests["cells"] is not None else "."),
            "",
        ]
        out += markdown_table(table, domains, cell=cell, bold=False) + [""]
    return out


def both_kinds(cmp: dict[str, Any]) -> list[str]:
    """The final-expert ensemble and the forest side by side, from the same experts."""
    if len(cmp["kinds"]) < 2:
        return []
    kinds = cmp["kinds"]
    names = list(kinds)
    out = ["## Both ensembles from the same experts", ""]
    out += [f"- {KIND_SHORT.get(kn, kn)} (`ensemble = \"{kn}\"`): the {KIND_NAMES.get(kn, kn)}, mixing method "
            f"`{kinds[kn]['method']}` (chosen on {kinds[kn]['method_choice']['chosen_on']})." for kn in names]
    out += ["", f"The {KIND_SHORT.get(names[1], names[1])} is mixed from the cached scores only (no `product`)."]
    base = kinds[names[0]].get("baseline")
    short = [KIND_SHORT.get(kn, kn) for kn in names]
    out += ["", "| strategy | " + " | ".join(f"mean log-ppl ({kn})" for kn in short)
            + ("".join(f" | lower than {base} ({kn})" for kn in short) if base else "") + " |",
            "|---|" + "---:|" * (len(names) * (2 if base else 1))]
    for s in strategy_order(list(kinds[names[0]]["table"])):
        cells = [f"{kinds[kn]['mean_log_ppl'][s][0]:.4f}" for kn in names]
        if base:
            cells += [(f"{kinds[kn]['wins'][s]['wins']} of {kinds[kn]['wins'][s]['of']}" if s in kinds[kn]["wins"] else "-") for kn in names]
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    for ref in kinds[names[0]]["headline"].get("references", []):
        counts = "; ".join(f"{len(kinds[kn]['headline'][f'{ref}_best'])} of {kinds[kn]['headline']['of']} against the "
                           f"{KIND_SHORT.get(kn, kn)}" for kn in names)
        out += ["", f"The compute-matched `{ref}` model (a single model) is lower than every ensemble in {counts}."]
    other = kinds[names[1]]
    out += ["", f"### The {KIND_SHORT.get(names[1], names[1])} per domain, method `{other['method']}`", ""]
    out += main_table(other, cmp["domains"]) + [""]
    out += headline(other, _total(cmp)) + [""]
    return out


def allocation(cmp: dict[str, Any]) -> list[str]:
    out = []
    for name, alloc in cmp.get("decisions", {}).items():
        sm = alloc["summary"]
        out += ["", f"## `{name}`: its allocation, predicted against measured", "",
                f"Objective `{sm['objective']}`; pilots {_flops(sm['pilot_flops'])} + experts {_flops(sm['expert_flops'])} = "
                f"{_flops(sm['total_flops'])} FLOPs ({sm['off_budget']:+.2%} against the budget {_flops(sm['budget_flops'])}, "
                f"{sm.get('flops_convention') or 'paper'} count). Losses are the expert's validation loss (nats/token) on its own "
                "domain right after it trained.", "",
                "| lineage | iteration | domain | size | steps | predicted loss | measured loss |", "|---|---:|---|---|---:|---:|---:|"]
        for r in alloc["rows"]:
            measured = "-" if r["measured_loss"] is None else f"{r['measured_loss']:.3f}"
            out.append(f"| {r['lineage']} | {r['iteration']} | {r['domain']} | {r['size']} | {r['steps']} | "
                       f"{r['predicted_loss']:.3f} | {measured} |")
        err = alloc["errors"]
        if err["all"]["mae"] is not None:
            out += ["", f"Prediction error (predicted - measured, nats/token) over {alloc['repeats']} repeat(s):", "",
                    "| iteration | experts | mean absolute error | mean error |", "|---|---:|---:|---:|"]
            for i, e in [*err["by_iteration"].items(), ("all", err["all"])]:
                if e["mae"] is not None:
                    out.append(f"| {i} | {e['n']} | {e['mae']:.3f} | {e['bias']:+.3f} |")
    return out


def opt_out(cmp: dict[str, Any]) -> list[str]:
    """Per strategy: each domain's perplexity change when one expert leaves the ensemble."""
    effects = cmp.get("opt_out") or {}
    if not effects:
        return []
    out = ["", "## Opting out: one expert removed", "",
           f"Perplexity change per domain when one expert leaves its ensemble (method `{cmp['method']}`, mixed again "
           "from cached scores, nothing retrained; `hdee eval RUN_DIR --without EXPERT_OR_DOMAIN` for any set). " + NOT_REMOVED]
    for s in strategy_order(list(effects)):
        removed = list(effects[s])
        out += ["", f"### `{s}`", "", "| domain | " + " | ".join(f"without `{e}`" for e in removed) + " |",
                "|---|" + "---:|" * len(removed)]
        for _, ds in domain_groups(cmp["domains"]):
            for d in ds:
                out.append(f"| {d['name']} | " + " | ".join(f"{effects[s][e][d['name']]:+.1%}" for e in removed) + " |")
    return out


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def provenance(prov: dict[str, Any]) -> list[str]:
    """How the results were made: code, packages, machine, command, and each strategy's job time."""
    env = prov["environment"]
    git = env.get("git")
    code = f"hdee {env.get('hdee')}, " + (
        f"commit `{git['commit'][:12]}`" + (" with uncommitted changes" if git.get("dirty") else "")
        if git else "not run from a git checkout"
    )
    pkgs = ", ".join(f"{k} {env['packages'][k]}" for k in PACKAGES if env.get("packages", {}).get(k))
    hw = env.get("hardware", {})
    gpus = hw.get("gpus") or []
    machine = f"{hw.get('cpu')}, {hw.get('cpus')} CPUs" + (f", {len(gpus)} x {gpus[0]}" if gpus else ", no GPU")
    # "seeds": the seed models' own scoring, shown with no strategy
    costs = {s: prov["costs"][s] for s in strategy_order([k for k in prov["costs"] if k != "seeds"])}
    on_gpu = any(c["gpu_hours"] > 0 for c in costs.values())
    out = ["## How this was made", "",
           f"{code}; Python {env.get('python')}; {pkgs}.",
           f"Evaluated on {hw.get('host')} ({machine}; {env.get('platform')}).",
           f"Command: `{env.get('command')}`.", "",
           "| strategy | seed models | domain phase | scoring |" + (" GPU-hours |" if on_gpu else ""),
           "|---|---:|---:|---:|" + ("---:|" if on_gpu else "")]
    for s, c in costs.items():
        gpu = f" {c['gpu_hours']:.3f} |" if on_gpu else ""
        out.append(f"| {s} | {_clock(c['seed'])} | {_clock(c['domain_phase'])} | {_clock(c['scoring'])} |{gpu}")
    out += ["", f"Job time (h:mm:ss): the summed wall time of the strategy's jobs over {prov['repeats']} repeat(s), as each "
            "job's done record keeps it (jobs run side by side, so it adds up to more than the elapsed time; a resumed "
            "job counts its last run only). Seed models serve several strategies and count once in each."
            + ("" if on_gpu else " No job ran on a GPU.")]
    return out


def inference(cmp: dict[str, Any]) -> list[str]:
    """Perplexity next to inference FLOPs per method and ensemble, and how routed methods routed."""
    kinds = {kind: per for kind, per in (cmp.get("inference") or {}).items() if per}
    if not kinds:
        return []
    out = ["", "## Inference cost", "",
           "Perplexity (geometric mean over domains) and inference FLOPs per scored token, the mean over domains: every "
           "model a method runs plus its router, 2 x (non-embedding + head) parameters per token plus causal attention "
           "(`inference.png` plots them)."]
    routed = next((e["routing"] for per in kinds.values() for e in per.values() if (e.get("routing") or {}).get("router")), None)
    if routed:
        out += ["", f"Routed methods: a `{routed['router']}` router built from each expert's own train split reads the first "
                    f"{routed['route_tokens']} tokens of every window, which `{routed['prefix_model']}` "
                    f"({routed['prefix_model_reason']}) scores; only the k chosen experts score the rest."]
    out += ["", "| ensemble | strategy | method | trained ppl | held-out ppl | FLOPs/token | vs all experts |",
            "|---|---|---|---:|---:|---:|---:|"]
    for kind, per in kinds.items():
        for name in strategy_order(list(per)):
            methods = per[name]["methods"]
            ref = methods.get("uniform", next(iter(methods.values())))["flops"]
            for m, v in methods.items():
                trained, held = v["ppl"].get("trained"), v["ppl"].get("held-out")
                label = "the model alone" if per[name].get("single_model") else m
                out.append(f"| {KIND_SHORT.get(kind, kind)} | {name} | {label} | {'-' if trained is None else fmt_ppl(trained)} | "
                           f"{'-' if held is None else fmt_ppl(held)} | {v['flops']:.3g} | {v['flops'] / ref:.2f} |")
    return out


def _total(cmp: dict[str, Any]) -> bool:
    """Whether the budgets were matched with the seed models counted (`budget.charge = "total"`)."""
    return any(m.get("charge") == "total" for m in cmp.get("flops", {}).values())


def render_markdown(cmp: dict[str, Any], run_name: str) -> str:
    k = cmp["kinds"][cmp["kind"]]
    domains = cmp["domains"]
    out = [f"# hdee report: {run_name}", ""] + opening(cmp.get("regime")) + intro(list(k["table"]), cmp.get("seed_corpus"))
    out += gates(cmp.get("regime")) + verdict(cmp.get("regime")) + tiers(cmp.get("regime")) + spreads(cmp.get("regime"))
    out += ["## Results", ""]
    out.append(f"Perplexity on the test split of every domain (lower is better) of the {KIND_NAMES.get(cmp['kind'], cmp['kind'])}, "
               f"mixing method `{k['method']}`, {choice_text(k['method_choice'])}. "
               + ("Best per domain in bold only where its 95% interval over test documents against every other strategy "
                  "excludes zero." if isinstance(k.get("clear_best"), set) else "Best per domain in bold."))
    out.append("")
    if k["repeats"] > 1:
        out += [f"Geometric mean over {k['repeats']} repeats ± the standard deviation of log-perplexity: {cmp['noise']}.", ""]
    out += main_table(k, domains) + [""] + headline(k, _total(cmp)) + [""]
    out += noise(k, domains)
    if "mean_log_ppl" in k:
        out += compute_table(cmp) + [""]
    out += both_kinds(cmp)
    out += allocation(cmp)
    out += inference(cmp) + front_section(cmp)
    out += ["", "## Every mixing method", ""] + (["Bold: a domain's best, only where its 95% interval over test documents "
                                                  "against every other strategy excludes zero.", ""] if "per_method_clear" in cmp else [])
    for m, table in cmp["per_method"].items():
        bold = cmp.get("per_method_clear", {}).get(m, True)  # a set: bold only where the best is clear over documents
        out += [f"### {method_label(m, cmp)}", ""] + markdown_table(table, domains, bold=bold) + [""]
    if cmp.get("seeds"):
        out += ["## Seed models", "", "Perplexity of each seed model on every domain, before any branching.", ""]
        out += markdown_table(cmp["seeds"], domains) + [""]
    shift = cmp.get("seed_shift")
    if shift:
        out += ["## Experts against their seed", "",
                "Perplexity on the expert's own domain before branching (the seed of its size) and after.", "",
                "| expert | domain | size | steps | seed ppl | expert ppl | change |", "|---|---|---|---:|---:|---:|---:|"]
        for r in shift:
            change = r["expert_ppl"] / r["seed_ppl"] - 1
            out.append(f"| {r['expert']} | {r['domain']} | {r['size']} | {r['steps']} | "
                       f"{fmt_ppl(r['seed_ppl'])} | {fmt_ppl(r['expert_ppl'])} | {change:+.1%} |")
    out += opt_out(cmp)
    if cmp.get("provenance"):
        out += [""] + provenance(cmp["provenance"])
    return "\n".join(out) + "\n"
