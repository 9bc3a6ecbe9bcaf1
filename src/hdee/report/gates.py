"""Regime gates: whether a run is in the regime where its comparison can answer the question.

A heterogeneous strategy can only show that bigger experts or more steps for harder domains pay if
the domain phase helps at all and the sizes differ measurably. Three gates, all on validation
data (never the test split), from saved `results*.json`:

* (a) each strategy's ensemble beats its own seed model(s), mixed the same way, on the trained
  domains (mean log-perplexity over the selection windows; `seed_val_ppl` in the results);
* (b) the largest seed beats the smallest on the seed corpus's validation split by at least
  `SEED_SDS` standard deviations of that paired gap over seed draws (repeat 0 and the repeats that
  retrain the seed models); not measurable, so failed, without two draws or without a seed corpus
  disjoint from the experts' domains;
* (c) every expert beats its parent on its own domain.

Beside them: out-of-lineage forgetting, each final expert's validation log-perplexity on the
trained domains outside its lineage minus its seed's (positive = forgot).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

SEED_SDS = 3.0


def _mean(xs: list[float]) -> float:
    """The mean, inf or nan when a diverged model's loss is (statistics.fmean refuses inf - inf)."""
    return sum(xs) / len(xs)


def _mean_log(ppl: dict[str, float], domains: list[str]) -> float | None:
    vals = [math.log(ppl[d]) for d in domains if d in ppl]
    return sum(vals) / len(vals) if vals and len(vals) == len(domains) else None


def _trained(run: dict[str, Any]) -> list[str]:
    return [d["name"] for d in run["domains"] if d["role"] == "train"]


def gate_seeds_beaten(runs: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """(a): per strategy, the ensemble's and its seeds' mean validation log-perplexity on trained domains."""
    rows = {}
    for name in runs[0]["ensembles"]:
        ens_vals, seed_vals = [], []
        for run in runs:
            ens = run["ensembles"].get(name, {})
            trained = _trained(run)
            e = _mean_log(ens.get("val_ppl", {}).get(method, {}), trained)
            s = _mean_log(ens.get("seed_val_ppl", {}).get(method, {}), trained)
            if e is not None and s is not None:
                ens_vals.append(e)
                seed_vals.append(s)
        if not ens_vals:
            rows[name] = {"measurable": False, "passed": False}
            continue
        ens_m, seed_m = _mean(ens_vals), _mean(seed_vals)
        rows[name] = {"measurable": True, "ensemble": ens_m, "seeds": seed_m, "diff": ens_m - seed_m, "passed": ens_m < seed_m}
    failed = [n for n, r in rows.items() if not r["passed"]]
    return {"passed": bool(rows) and not failed, "rows": rows, "failed": failed, "method": method}


def _seed_of(experts: dict[str, Any], eid: str) -> dict[str, Any] | None:
    """The seed model an expert descends from (itself for a seed), None when its chain is broken."""
    e = experts.get(eid)
    while e is not None and e["meta"].get("kind") != "seed":
        e = experts.get(_id(e["meta"].get("parent")) or "")
    return e


def seed_gap(run: dict[str, Any], strategy: str | None = None) -> tuple[str, str, float] | None:
    """(smallest size, largest size, smallest's minus largest's validation loss on the seed corpus),
    among the seeds of `strategy`'s experts, or among every seed of the run."""
    experts = run["experts"]
    if strategy is not None and strategy in run.get("ensembles", {}):
        found = (_seed_of(experts, eid) for eid in run["ensembles"][strategy]["experts"])
        seeds = list({id(e): e["meta"] for e in found if e is not None}.values())
    else:
        seeds = [e["meta"] for e in experts.values() if e["meta"].get("kind") == "seed"]
    seeds = [m for m in seeds if isinstance(m.get("final_val_loss"), (int, float))]
    if len(seeds) < 2:
        return None
    by_size = sorted(seeds, key=lambda m: (m.get("params") or {}).get("total", 0))
    small, large = by_size[0], by_size[-1]
    return small.get("size_name"), large.get("size_name"), float(small["final_val_loss"]) - float(large["final_val_loss"])


def _size_gate(draws: list[dict[str, Any]], strategy: str | None) -> dict[str, Any]:
    corpus = draws[0].get("seed_corpus") or {}
    gaps = [g for g in (seed_gap(r, strategy) for r in draws) if g is not None]
    out: dict[str, Any] = {"draws": len(gaps), "sds": SEED_SDS, "passed": False, "measurable": False,
                           "gaps": [g[2] for g in gaps], "sizes": list(gaps[0][:2]) if gaps else None}
    if not corpus.get("disjoint"):
        out["why"] = "the seed models are not trained on a seed corpus disjoint from the experts' domains"
        return out
    if len(gaps) < 2:
        out["why"] = f"{len(gaps)} seed draw(s) with two seed sizes (run `--vary seed-models` repeats for at least 2)"
        return out
    mean, sd = _mean(out["gaps"]), float(np.std(out["gaps"], ddof=1))
    out.update(measurable=True, mean=mean, sd=sd, passed=mean > 0 and mean >= SEED_SDS * sd)
    return out


def gate_seed_sizes(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """(b): the paired gap between the smallest and the largest seed over seed draws, for the sizes of
    `MHe-IHo` (the gate) and of each of its other spreads (`MHe-IHo.NAME`, beside it); every seed of
    the run when it has no `MHe-IHo`."""
    spread_names = sorted(n for n in draws[0].get("ensembles", {}) if n.startswith("MHe-IHo."))
    main = "MHe-IHo" if "MHe-IHo" in draws[0].get("ensembles", {}) else None
    out = _size_gate(draws, main)
    out["strategy"] = main
    out["spreads"] = {n: _size_gate(draws, n) for n in spread_names}
    return out


def _id(parent: dict[str, Any] | None) -> str | None:
    return Path(parent["path"]).name if parent and parent.get("path") else None


def gate_parents_beaten(run: dict[str, Any]) -> dict[str, Any]:
    """(c): every trained expert against the model it branched from, on its own domain."""
    experts = run["experts"]
    rows = []
    for eid, e in experts.items():
        meta, parent = e["meta"], experts.get(_id(e["meta"].get("parent")) or "")
        dom = meta.get("domain")
        if meta.get("kind") != "train" or not dom or parent is None:
            continue
        mine, theirs = e.get("val_ppl", {}).get(dom), parent.get("val_ppl", {}).get(dom)
        if mine is None or theirs is None:
            continue
        rows.append({"expert": eid, "domain": dom, "diff": math.log(mine) - math.log(theirs)})
    failed = [r for r in rows if not r["diff"] < 0]  # a diverged expert (inf, nan) fails too
    return {"passed": bool(rows) and not failed, "experts": len(rows), "beaten": len(rows) - len(failed), "failed": failed}


def forgetting(run: dict[str, Any]) -> dict[str, float]:
    """Per strategy: mean over its final experts of (expert - its seed) validation log-perplexity on
    the trained domains outside the expert's lineage."""
    experts, trained = run["experts"], _trained(run)
    lineage_domains: dict[str, set[str]] = {}
    for e in experts.values():
        if e["meta"].get("kind") == "train" and e["meta"].get("lineage"):
            lineage_domains.setdefault(e["meta"]["lineage"], set()).add(e["meta"].get("domain"))

    out = {}
    for name, ens in run["ensembles"].items():
        diffs = []
        for eid in ens["experts"]:
            e, seed = experts.get(eid), _seed_of(experts, eid)
            if e is None or seed is None or e["meta"].get("kind") != "train":
                continue
            outside = [d for d in trained if d not in lineage_domains.get(e["meta"].get("lineage"), set())]
            diffs += [math.log(e["val_ppl"][d]) - math.log(seed["val_ppl"][d]) for d in outside
                      if d in e.get("val_ppl", {}) and d in seed.get("val_ppl", {})]
        if diffs:
            out[name] = _mean(diffs)
    return out


def regime_gates(runs: list[dict[str, Any]], seed_draws: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """All three gates and the forgetting beside them; `why` lists the failures in words."""
    a, b, c = gate_seeds_beaten(runs, method), gate_seed_sizes(seed_draws), gate_parents_beaten(runs[0])
    why = []
    if not a["passed"]:
        why.append("the ensembles of " + ", ".join(a["failed"]) + " do not beat their own seed models on the trained domains")
    if not b["passed"]:
        why.append(b.get("why") or (f"the {b['sizes'][1]} seed beats the {b['sizes'][0]} seed by {b['mean']:.4f} nats, less than "
                                    f"{SEED_SDS:g} standard deviations ({b['sd']:.4f}) over {b['draws']} seed draws"))
    if not c["passed"]:
        why.append(f"{len(c['failed'])} of {c['experts']} experts do not beat their parent on their own domain"
                   if c["experts"] else "no expert could be compared with its parent")
    return {"a": a, "b": b, "c": c, "forgetting": forgetting(runs[0]), "passed": not why, "why": why}
