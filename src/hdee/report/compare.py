"""The comparison the report shows: strategy tables, wins against the baseline beside their
chance rate, the paper's win count, corrected tests (`hdee.report.stats`), for both ensemble kinds,
all from saved `results.json` files (one per repeat): `hdee report` never touches a model.
"""

from __future__ import annotations

import math
from typing import Any

import hdee.report.stats as stats
from hdee.core.errors import HdeeError
from hdee.core.provenance import total_costs
from hdee.registry import MIXING_METHODS, STRATEGIES
from hdee.plan.seeds import Vary, noise_covered
from hdee.report.results_check import load_repeats  # noqa: F401 - where callers have always found it

DEFAULT_ORDER = 100  # where strategies no registry entry places go: after the registered ones
NOT_REMOVED = (
    "Opt-out does not remove what the leaving data taught the models that stay: the seed models were "
    "trained on every training domain, and later experts of a lineage inherit their parents' weights."
)


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


def mean_log_ppl(ppl: dict[str, float], domains: list[str]) -> float:
    return sum(math.log(ppl[d]) for d in domains) / len(domains)


def kinds_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{ensemble kind: {"method_choice", "ensembles"}}: the config's kind first, then the other
    one (`alt`) when the run evaluated both from the same experts."""
    if "method_choice" not in run:
        raise HdeeError(f"results of {run.get('config', 'this run')!r} predate the validation choice of the mixing method; "
                        "recompute them with `hdee eval RUN_DIR`")
    out = {run.get("ensemble", "final"): {"method_choice": run["method_choice"], "ensembles": run["ensembles"]}}
    if run.get("alt"):
        out[run["alt"]["ensemble"]] = run["alt"]
    return out


def method_for(choices: list[dict[str, Any]]) -> dict[str, Any]:
    """One method for every repeat: theirs when they agree, else the lowest validation mean
    log-perplexity averaged over the repeats (still never the test split)."""
    methods = {c["method"] for c in choices}
    if len(methods) == 1:
        return {**choices[0], "repeats": len(choices)}
    shared = set.intersection(*(set(c["val_mean_log_ppl"]) for c in choices))
    means = {m: sum(c["val_mean_log_ppl"][m] for c in choices) / len(choices) for m in shared}
    best = min(sorted(means), key=means.get)
    return {"method": best, "chosen_on": "val", "val_mean_log_ppl": means, "repeats": len(choices), "pooled": True}


def _routed(method: str) -> bool:
    entry = MIXING_METHODS.find(method)
    return entry is not None and entry.routed > 0


def model_alone(name: str, ens: dict[str, Any], method: str) -> str:
    """The method whose numbers stand for `name` under `method`: the method itself, except for a
    single-model strategy, which has nothing to mix or route and so is the model alone (a routed
    method would score its first tokens with the prefix model instead)."""
    if not (_single_model(name) and _routed(method)):
        return method
    return next((m for m in ("uniform", *ens["ppl"]) if m in ens["ppl"] and not _routed(m)), method)


def strategy_table(ensembles: dict[str, Any], method: str) -> dict[str, dict[str, float]]:
    """{strategy: {domain: ppl}} for one mixing method (single-model strategies ignore the method)."""
    return {name: dict(ens["ppl"][model_alone(name, ens, method)]) for name, ens in ensembles.items()}


def lowest(table: dict[str, dict[str, float]], domain: str, among: list[str]) -> set[str]:
    """Strategies whose perplexity on `domain` equals the minimum (ties count for all of them)."""
    vals = {s: table[s][domain] for s in among}
    lo = min(vals.values())
    return {s for s, v in vals.items() if math.isclose(v, lo, rel_tol=1e-9, abs_tol=1e-12)}


def heterogeneous_wins(table: dict[str, dict[str, float]], domains: list[str]) -> dict[str, Any]:
    """The paper's count: in how many domains is some heterogeneous ensemble lowest.

    Compared among the expert ensembles (the dense model and the control arms are reported apart); a tie
    with the baseline counts as a heterogeneous win, as in the paper (its three moderate
    domains are served by the identical expert in every strategy). `chance` is the count
    expected if every compared ensemble were equally good: heterogeneous / compared per domain.
    """
    ensembles = [s for s in table if not _single_model(s) and not ((e := STRATEGIES.find(s)) and e.control)]
    hetero = [s for s in ensembles if _heterogeneous(s)]
    won = [d for d in domains if hetero and lowest(table, d, ensembles) & set(hetero)]
    references = [s for s in table if _single_model(s)]
    chance = len(domains) * len(hetero) / len(ensembles) if ensembles else 0.0
    out = {"wins": len(won), "of": len(domains), "chance": chance, "domains": won, "compared": ensembles, "references": references}
    for ref in references:
        if ensembles:
            beaten = [d for d in domains if table[ref][d] < min(table[s][d] for s in ensembles)]
            out[f"{ref}_best"] = beaten
    return out


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def _geo_sd(xs: list[float]) -> tuple[float, float]:
    """Geometric mean over repeats and the SD of the logs: the tests work on log-perplexities."""
    return (math.exp((ms := _mean_sd([math.log(x) for x in xs]))[0]), ms[1])


def analyse(kind_runs: list[dict[str, Any]], domains: list[str]) -> dict[str, Any]:
    """One ensemble kind over its repeats: the method, the (mean) table, the paper's count, wins
    per strategy against the baseline with their chance rate, corrected tests and window CIs."""
    choice = method_for([k["method_choice"] for k in kind_runs])
    method = choice["method"]
    tables = [strategy_table(k["ensembles"], method) for k in kind_runs]
    strategies = list(tables[0])
    mean_std = {s: {d: _geo_sd([t[s][d] for t in tables]) for d in domains} for s in strategies}
    table = {s: {d: ms[0] for d, ms in per.items()} for s, per in mean_std.items()} if len(tables) > 1 else tables[0]
    out: dict[str, Any] = {
        "method": method,
        "method_choice": choice,
        "repeats": len(tables),
        "table": table,
        "mean_std": mean_std,
        "headline": heterogeneous_wins(table, domains),
        "per_repeat_wins": [heterogeneous_wins(t, domains)["wins"] for t in tables],
        "mean_log_ppl": {s: _mean_sd([mean_log_ppl(t[s], domains) for t in tables]) for s in strategies},
    }
    base = baseline_of(strategies)
    if base is None:
        return out
    others = [s for s in strategies if s != base and not _single_model(s)]
    out["baseline"] = base
    out["wins"] = stats.wins_against(table, base, [s for s in strategies if s != base], domains)
    out["tests"] = stats.paired_tests(tables, base, others, domains)
    per_window = [{s: k["ensembles"][s].get("window_nll", {}).get(method) for s in strategies} for k in kind_runs]
    if all(r[s] is not None for r in per_window for s in [base, *others]):
        out["window_ci"] = stats.window_cis(per_window, base, others, domains)
        out["ci_level"] = 1 - stats.ALPHA
    return out


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


def _decision_rows(ens: dict[str, Any]) -> list[dict[str, Any]] | None:
    alloc = ens.get("meta", {}).get("decision")
    rows_in = alloc.get("experts") if isinstance(alloc, dict) else None
    if not rows_in or not isinstance(rows_in, list) or not all(isinstance(e, dict) and "predicted_loss" in e for e in rows_in):
        return None
    measured = ens["meta"].get("measured_val_loss", {})
    return [
        {**{k: e[k] for k in ("lineage", "iteration", "domain", "size", "steps", "predicted_loss")},
         "measured_loss": measured.get(e["domain"])}
        for e in rows_in
    ]


def prediction_errors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean absolute and mean signed (predicted - measured) error, overall and by iteration."""

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        errs = [r["predicted_loss"] - r["measured_loss"] for r in rs if r["measured_loss"] is not None]
        if not errs:
            return {"n": 0, "mae": None, "bias": None}
        return {"n": len(errs), "mae": sum(map(abs, errs)) / len(errs), "bias": sum(errs) / len(errs)}

    iterations = sorted({r["iteration"] for r in rows})
    return {"all": summary(rows), "by_iteration": {i: summary([r for r in rows if r["iteration"] == i]) for i in iterations}}


def decision_rows(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """For strategies whose decision predicts each expert's loss (auto): predicted against measured
    loss in repeat 0, and the prediction error over every repeat, by iteration."""
    out = {}
    for name, ens in runs[0]["ensembles"].items():
        rows = _decision_rows(ens)
        if rows is None:
            continue
        pooled = [r for run in runs for r in (_decision_rows(run["ensembles"].get(name, {})) or [])]
        alloc = ens["meta"]["decision"]
        keys = ("objective", "flops_convention", "pilot_flops", "expert_flops", "total_flops", "budget_flops", "off_budget")
        errors = prediction_errors(pooled)
        out[name] = {"rows": rows, "summary": {k: alloc.get(k) for k in keys}, "mean_abs_error": prediction_errors(rows)["all"]["mae"],
                     "errors": errors, "repeats": len(runs)}
    return out


def opt_out_effects(ensembles: dict[str, Any], method: str) -> dict[str, dict[str, dict[str, float]]]:
    """{strategy: {removed expert: {domain: relative perplexity change}}} from the ensembles' leave-one-out
    numbers (`without_each`), when they were mixed with `method`."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, ens in ensembles.items():
        loo = ens.get("without_each") or {}
        if loo.get("method") != method or not loo.get("ppl"):
            continue
        base = ens["ppl"][method]
        out[name] = {e: {d: v / base[d] - 1 for d, v in per.items()} for e, per in loo["ppl"].items()}
    return out


def inference_cost(ensembles: dict[str, Any], methods: list[str], domains: list[dict[str, Any]]) -> dict[str, Any]:
    """Per ensemble and method: perplexity (geometric mean over the trained, held-out and all
    domains) and inference FLOPs per scored token (mean over domains), plus how it routed."""
    groups = {
        "trained": [d["name"] for d in domains if d["role"] == "train"],
        "held-out": [d["name"] for d in domains if d["role"] != "train"],
        "all": [d["name"] for d in domains],
    }
    out: dict[str, Any] = {}
    for name, ens in ensembles.items():
        flops = ens.get("inference_flops")
        if not flops:
            continue  # results written before inference FLOPs were recorded
        # a single model is one point: the model alone, whatever the method
        shown = [m for m in methods if m in flops and m in ens["ppl"]]
        if _single_model(name):
            shown = [model_alone(name, ens, shown[0])] if shown else []
        out[name] = {
            "methods": {
                m: {
                    "ppl": {g: math.exp(mean_log_ppl(ens["ppl"][m], ds)) for g, ds in groups.items() if ds},
                    "flops": sum(flops[m][d] for d in groups["all"]) / len(groups["all"]),
                }
                for m in shown
            },
            "routing": ens.get("routing"),
            "single_model": _single_model(name),
        }
    return out


def provenance(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Repeat 0's environment and command, and each strategy's job time added up over all repeats."""
    first = runs[0].get("provenance")
    if not first:
        return None
    env = {k: v for k, v in first.items() if k != "costs"}
    costs = total_costs([r["provenance"]["costs"] for r in runs if r.get("provenance")])
    return {"environment": env, "costs": costs, "repeats": len(runs)}


def comparison(runs: list[dict[str, Any]], vary: Vary = "domain-phase") -> dict[str, Any]:
    """Everything the report renders, from the repeats' results (repeats of kind `vary`).

    `kinds` holds the analysis of each ensemble kind (the config's first); with several repeats
    tables are means over repeats, and `noise` says what their spread covers. The per-method
    tables, seed shift and allocation are those of repeat 0.
    """
    main = runs[0]
    domains = [d["name"] for d in main["domains"]]
    kinds = {kind: analyse([kinds_of(r)[kind] for r in runs], domains) for kind in kinds_of(main)}
    primary = kinds[next(iter(kinds))]
    first = next(iter(kinds_of(main).values()))
    out = {
        **primary,
        "kind": next(iter(kinds)),
        "kinds": kinds,
        "domains": main["domains"],
        "methods": main["methods"],
        "per_method": {m: strategy_table(first["ensembles"], m) for m in main["methods"]},
        "product_windows": {s: e.get("product_windows", 0) for s, e in first["ensembles"].items() if len(e["experts"]) > 1},
        "flops": {s: e.get("meta", {}) for s, e in first["ensembles"].items()},
        "seed_corpus": main.get("seed_corpus"),
        "seed_shift": seed_shift(main),
        "seeds": seed_table(main),
        "decisions": decision_rows(runs),
        "opt_out": opt_out_effects(first["ensembles"], primary["method"]),
        "vary": vary,
        "noise": noise_covered(vary),
        "inference": {kind: inference_cost(k["ensembles"], main["methods"], main["domains"]) for kind, k in kinds_of(main).items()},
        "routing_front": {kind: {n: {k: v for k, v in s.items() if k != "per_domain"} for n, s in per.items()}
                          for kind, per in (main.get("routing_front") or {}).items()},
    }
    prov = provenance(runs)
    if prov:
        out["provenance"] = prov
    return out
