"""The comparison the report shows: strategy tables, the paper's win count, and repeat statistics.

Everything here is computed from saved `results.json` files (one per repeat), so `hdee report`
rebuilds the report without touching a model. The report module only renders this.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from hdee.fsutil import read_json
from hdee.layout import RunLayout
from hdee.registry import MIXING_METHODS, STRATEGIES

DEFAULT_ORDER = 100  # where strategies no registry entry places go: after the registered ones


# ---------------------------------------------------------------- strategy traits (hdee.registry)


def strategy_order(names: list[str]) -> list[str]:
    """`names` in display order (the registry's `order`); ties and unknown names keep their order."""

    def key(name: str) -> int:
        entry = STRATEGIES.find(name)
        return entry.order if entry is not None else DEFAULT_ORDER

    return sorted(names, key=key)


def baseline_of(names: list[str]) -> str | None:
    """The homogeneous strategy the others are compared against, when one is among `names`."""
    return next((n for n in names if (e := STRATEGIES.find(n)) is not None and e.baseline), None)


def _heterogeneous(name: str) -> bool:
    entry = STRATEGIES.find(name)
    return entry is not None and entry.heterogeneous


def _single_model(name: str) -> bool:
    entry = STRATEGIES.find(name)
    return entry is not None and entry.single_model


def load_repeats(layout: RunLayout) -> list[dict[str, Any]]:
    """results.json (repeat 0) followed by results-repeat<k>.json in order, when present."""
    runs = [read_json(layout.results_path(0))]
    k = 1
    while (p := layout.results_path(k)).exists():
        runs.append(read_json(p))
        k += 1
    return runs


def mean_log_ppl(ppl: dict[str, float], domains: list[str]) -> float:
    return sum(math.log(ppl[d]) for d in domains) / len(domains)


def choose_method(ensembles: Mapping[str, Mapping[str, Any]], methods: list[str], domains: list[str]) -> str:
    """The mixing method with the lowest mean log-perplexity over all domains and ensembles of
    more than one expert; oracles and methods scored on a bounded subset are never chosen."""
    scores: dict[str, list[float]] = {}
    for ens in ensembles.values():
        if len(ens["experts"]) < 2:
            continue
        for method in methods:
            entry = MIXING_METHODS.find(method)
            if entry is not None and not entry.candidate_default:
                continue
            scores.setdefault(method, []).append(mean_log_ppl(ens["ppl"][method], domains))
    if not scores:
        return methods[0]
    return min(scores, key=lambda m: (sum(scores[m]) / len(scores[m]), m))


def best_method(results: dict[str, Any]) -> str:
    """`choose_method` over a saved results dict."""
    return choose_method(results["ensembles"], results["methods"], [d["name"] for d in results["domains"]])


def strategy_table(results: dict[str, Any], method: str) -> dict[str, dict[str, float]]:
    """{strategy: {domain: ppl}} for one mixing method (single-model strategies ignore the method)."""
    return {name: dict(ens["ppl"][method]) for name, ens in results["ensembles"].items()}


def lowest(table: dict[str, dict[str, float]], domain: str, among: list[str]) -> set[str]:
    """Strategies whose perplexity on `domain` equals the minimum (ties count for all of them)."""
    vals = {s: table[s][domain] for s in among}
    lo = min(vals.values())
    return {s for s, v in vals.items() if math.isclose(v, lo, rel_tol=1e-9, abs_tol=1e-12)}


def heterogeneous_wins(table: dict[str, dict[str, float]], domains: list[str]) -> dict[str, Any]:
    """The paper's headline: in how many domains is a heterogeneous ensemble lowest.

    Compared among the expert ensembles (the dense baseline is reported separately); a tie
    with the baseline counts as a heterogeneous win, as in the paper (its three moderate
    domains are served by the identical expert in every strategy).
    """
    ensembles = [s for s in table if not _single_model(s)]
    hetero = [s for s in ensembles if _heterogeneous(s)]
    won = [d for d in domains if hetero and lowest(table, d, ensembles) & set(hetero)]
    references = [s for s in table if _single_model(s)]
    out = {"wins": len(won), "of": len(domains), "domains": won, "compared": ensembles, "references": references}
    for ref in references:
        if ensembles:
            beaten = [d for d in domains if table[ref][d] < min(table[s][d] for s in ensembles)]
            out[f"{ref}_best"] = beaten
    return out


def repeat_stats(runs: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Mean and std over repeats per (strategy, domain), and which heterogeneous wins survive noise.

    A win survives when the paired difference to the baseline (baseline - heterogeneous, per
    repeat, in log-perplexity) has a mean above two standard errors.
    """
    tables = [strategy_table(r, method) for r in runs]
    domains = [d["name"] for d in runs[0]["domains"]]
    strategies = list(tables[0])
    n = len(tables)

    def stats(xs: list[float]) -> tuple[float, float]:
        m = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        return m, sd

    mean_std = {
        s: {d: stats([t[s][d] for t in tables]) for d in domains} for s in strategies
    }
    surviving: list[str] = []
    base = baseline_of(strategies)
    if base is not None and n > 1:
        hetero = [s for s in strategies if _heterogeneous(s)]
        for d in domains:
            for s in hetero:
                diffs = [math.log(t[base][d]) - math.log(t[s][d]) for t in tables]
                m, sd = stats(diffs)
                if m > 0 and m > 2 * sd / math.sqrt(n):
                    surviving.append(d)
                    break
    per_run_wins = [heterogeneous_wins(t, domains)["wins"] for t in tables]
    overall = {s: stats([mean_log_ppl(t[s], domains) for t in tables]) for s in strategies}
    return {
        "repeats": n,
        "mean_std": mean_std,
        "wins_per_repeat": per_run_wins,
        "wins_surviving_noise": surviving,
        "mean_log_ppl": overall,
    }


def seed_table(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{"seed S": {domain: ppl}, ...}: every domain's perplexity under each seed model, before branching."""
    seeds = [e for e in results["experts"].values() if e["meta"].get("kind") == "seed"]
    ordered = sorted(seeds, key=lambda e: e["meta"].get("params", {}).get("total", 0))
    return {f"seed {e['meta'].get('size_name')}": dict(e["ppl"]) for e in ordered}


def seed_shift(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per trained domain: the seed model's perplexity before branching and the domain expert's after."""
    experts = results["experts"]
    seeds = {e["meta"].get("size_name"): e for e in experts.values() if e["meta"].get("kind") == "seed"}
    rows = []
    for eid, e in experts.items():
        meta = e["meta"]
        dom = meta.get("domain")
        seed = seeds.get(meta.get("size_name"))
        if meta.get("kind") != "train" or not dom or seed is None or dom not in e["ppl"]:
            continue
        rows.append(
            {
                "expert": eid,
                "domain": dom,
                "size": meta.get("size_name"),
                "steps": meta.get("steps"),
                "seed_ppl": seed["ppl"][dom],
                "expert_ppl": e["ppl"][dom],
            }
        )
    return rows


def decision_rows(results: dict[str, Any]) -> dict[str, Any]:
    """For strategies whose decision predicts each expert's loss (auto): predicted vs measured loss."""
    out = {}
    for name, ens in results["ensembles"].items():
        alloc = ens.get("meta", {}).get("decision")
        rows_in = alloc.get("experts") if isinstance(alloc, dict) else None
        if not rows_in or not isinstance(rows_in, list) or not all(isinstance(e, dict) and "predicted_loss" in e for e in rows_in):
            continue
        measured = ens["meta"].get("measured_val_loss", {})
        rows = [
            {**{k: e[k] for k in ("lineage", "iteration", "domain", "size", "steps", "predicted_loss")},
             "measured_loss": measured.get(e["domain"])}
            for e in alloc["experts"]
        ]
        pairs = [(r["predicted_loss"], r["measured_loss"]) for r in rows if r["measured_loss"] is not None]
        mae = sum(abs(p - m) for p, m in pairs) / len(pairs) if pairs else None
        summary = {k: alloc.get(k) for k in ("objective", "pilot_flops", "expert_flops", "total_flops", "budget_flops", "off_budget")}
        out[name] = {"rows": rows, "summary": summary, "mean_abs_error": mae}
    return out


def comparison(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the report renders, from the repeats' results.

    With several repeats the main table, its bold marks and the headline use the mean over
    repeats; the per-method tables, seed shift and allocation stay those of repeat 0.
    """
    main = runs[0]
    method = main.get("default_method") or best_method(main)
    domains = [d["name"] for d in main["domains"]]
    rep = repeat_stats(runs, method) if len(runs) > 1 else None
    if rep:
        table = {s: {d: ms[0] for d, ms in per.items()} for s, per in rep["mean_std"].items()}
    else:
        table = strategy_table(main, method)
    out: dict[str, Any] = {
        "method": method,
        "domains": main["domains"],
        "table": table,
        "headline": heterogeneous_wins(table, domains),
        "per_method": {m: strategy_table(main, m) for m in main["methods"]},
        "flops": {s: e.get("meta", {}) for s, e in main["ensembles"].items()},
        "seed_shift": seed_shift(main),
        "seeds": seed_table(main),
        "decisions": decision_rows(main),
    }
    if baseline_of(list(table)) is not None:
        out["mean_log_ppl"] = {s: mean_log_ppl(t, domains) for s, t in table.items()}
    if rep:
        out["repeats"] = rep
    return out
