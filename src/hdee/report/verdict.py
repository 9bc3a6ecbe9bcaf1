"""The pre-registered verdict per strategy (`hdee.report.prereg`), and the power calculation that sets its
repeats, from saved `results*.json` (`hdee.report.equivalence` does the statistics).

The endpoint of a repeat is the strategy's mean log-perplexity over the trained domains minus the
baseline's (geometric-mean perplexity ratio, in logs). The rule:

* supports HDEE: the paired interval over repeats lies wholly below 0;
* refutes it: it lies wholly above 0, or the TOST shows equivalence within the margin;
* inconclusive: anything else, or fewer repeats / seed draws than registered.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hdee.report.compare import kinds_of, model_alone, strategy_table
from hdee.report.equivalence import document_bootstrap, needed_repeats, t_interval, tost
from hdee.report.prereg import Preregistration
from hdee.registry import STRATEGIES

SUPPORTS, REFUTES, INCONCLUSIVE = "supports HDEE", "refutes it", "inconclusive"
# a control arm's result is read against the heterogeneous strategies', not as a verdict on HDEE itself
CONTROL_WORDS = {SUPPORTS: "control: below the baseline", REFUTES: "control: not below the baseline",
                 INCONCLUSIVE: "control: inconclusive"}


def _trained(run: dict[str, Any]) -> list[str]:
    return [d["name"] for d in run["domains"] if d["role"] == "train"]


def endpoint(run: dict[str, Any], kind: str, method: str, strategy: str, base: str, split: str = "test") -> float:
    """Mean over trained domains of log ppl(strategy) - log ppl(base) in one repeat."""
    ensembles = kinds_of(run)[kind]["ensembles"]
    if split == "test":
        table = strategy_table(ensembles, method)
    else:  # the selection windows of the validation split
        table = {s: ensembles[s]["val_ppl"][method] for s in (strategy, base)}
    doms = _trained(run)
    return sum(math.log(table[strategy][d]) - math.log(table[base][d]) for d in doms) / len(doms)


def _doc_interval(runs: list[dict[str, Any]], kind: str, method: str, s: str, base: str, pre: Preregistration):
    """The document bootstrap of the endpoint, each document's loss averaged over the repeats first."""
    strata = []
    for dom in runs[0]["domains"]:
        if dom["role"] != "train":
            continue
        if "doc_tokens" not in dom:
            return None
        per = [kinds_of(r)[kind]["ensembles"] for r in runs]
        try:
            a = np.mean([e[s]["doc_nll"][method][dom["name"]] for e in per], axis=0)
            b = np.mean([e[base]["doc_nll"][method][dom["name"]] for e in per], axis=0)
        except (KeyError, ValueError):
            return None
        strata.append((a, b, np.asarray(dom["doc_tokens"])))
    return document_bootstrap(strata, pre.analysis.confidence, pre.analysis.resamples) if strata else None


def rule(ci: tuple[float, float, float] | None, tost_p: float | None, alpha: float) -> str:
    if ci is None:
        return INCONCLUSIVE
    if ci[2] < 0:
        return SUPPORTS
    if ci[1] > 0 or (tost_p is not None and tost_p < alpha):
        return REFUTES
    return INCONCLUSIVE


def verdicts(runs: list[dict[str, Any]], seed_draws: int, method: str, pre: Preregistration, sha256: str) -> dict[str, Any]:
    """Per strategy: the endpoint per repeat, its interval, the TOST, the document interval and the verdict."""
    kind, base = pre.endpoint.ensemble, pre.endpoint.baseline
    ensembles = kinds_of(runs[0]).get(kind, {}).get("ensembles", {})
    short = []
    if len(runs) < pre.design.repeats:
        short.append(f"{len(runs)} of {pre.design.repeats} registered repeats")
    if seed_draws < pre.design.seed_draws:
        short.append(f"{seed_draws} of {pre.design.seed_draws} registered seed draws")
    recorded = ((runs[0].get("provenance") or {}).get("preregistration") or {}).get("sha256")
    out: dict[str, Any] = {"baseline": base, "kind": kind, "method": method, "repeats": len(runs), "seed_draws": seed_draws,
                           "short": short, "sha256": sha256, "recorded_sha256": recorded,
                           "changed": recorded is not None and recorded != sha256, "provisional": pre.design.provisional,
                           "documents": sum(len(d.get("doc_tokens", [])) for d in runs[0]["domains"] if d["role"] == "train"),
                           "margin": pre.analysis.margin, "alpha": pre.analysis.alpha, "confidence": pre.analysis.confidence,
                           "strategies": {}}
    if base not in ensembles:
        out["missing_baseline"] = True
        return out
    for s in ensembles:
        entry = STRATEGIES.find(s)
        if s == base or (entry is not None and entry.single_model):
            continue
        diffs = [endpoint(r, kind, method, s, base) for r in runs]
        ci = t_interval(diffs, pre.analysis.confidence)
        p = tost(diffs, pre.analysis.margin)
        out["strategies"][s] = {
            "diffs": diffs, "ci": ci, "tost_p": p, "doc_ci": _doc_interval(runs, kind, method, s, base, pre),
            "verdict": INCONCLUSIVE if short else rule(ci, p, pre.analysis.alpha),
        }
        if entry is not None and entry.control:
            out["strategies"][s]["verdict"] = CONTROL_WORDS[out["strategies"][s]["verdict"]]
    return out


def clear_best(runs: list[dict[str, Any]], kind: str, method: str, table: dict[str, dict[str, float]],
               confidence: float = 0.95) -> set[str] | None:
    """Domains whose lowest strategy in `table` is lower than every other by a document-bootstrap
    interval (each document's loss averaged over the repeats) that excludes zero, never a domain of
    one test document; None without
    per-document losses (results made before they were recorded)."""
    per = [kinds_of(r)[kind]["ensembles"] for r in runs]
    clear = set()
    for dom in runs[0]["domains"]:
        d = dom["name"]
        try:
            docs = {s: np.mean([e[s]["doc_nll"][model_alone(s, e[s], method)][d] for e in per], axis=0) for s in table}
            tokens = np.asarray(dom["doc_tokens"])
        except (KeyError, ValueError):
            return None
        best = min(table, key=lambda s: table[s][d])
        # one document has no spread to tell a clear best by
        if len(tokens) > 1 and all(document_bootstrap([(docs[s], docs[best], tokens)], confidence)[1] > 0
                                   for s in table if s != best):
            clear.add(d)
    return clear


def document_cis(runs: list[dict[str, Any]], kind: str, method: str, base: str, others: list[str],
                 confidence: float = 0.95) -> dict[str, dict[str, tuple[float, float, float]]] | None:
    """Per (strategy, domain): the bootstrap interval over whole test documents of the per-token loss
    difference to `base` (each document's loss averaged over the repeats first); None without
    per-document losses."""
    per = [kinds_of(r)[kind]["ensembles"] for r in runs]
    out: dict[str, dict[str, tuple[float, float, float]]] = {s: {} for s in others}
    try:
        for dom in runs[0]["domains"]:
            d, tokens = dom["name"], np.asarray(dom["doc_tokens"])
            b = np.mean([e[base]["doc_nll"][method][d] for e in per], axis=0)
            for s in others:
                a = np.mean([e[s]["doc_nll"][method][d] for e in per], axis=0)
                out[s][d] = document_bootstrap([(a, b, tokens)], confidence)
    except (KeyError, ValueError):
        return None
    return out


def power_table(runs: list[dict[str, Any]], kind: str, method: str, base: str, margin: float, alpha: float = 0.05,
                power: float = 0.8) -> dict[str, dict[str, Any]]:
    """Per strategy: the validation endpoint's spread over `runs` and the repeats the TOST needs."""
    out = {}
    for s in kinds_of(runs[0])[kind]["ensembles"]:
        entry = STRATEGIES.find(s)
        if s == base or (entry is not None and entry.single_model):
            continue
        diffs = [endpoint(r, kind, method, s, base, split="val") for r in runs]
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None
        out[s] = {"mean": sum(diffs) / len(diffs), "sd": sd, "repeats": len(diffs),
                  "needed": needed_repeats(sd, margin, alpha, power) if sd is not None else None}
    return out
