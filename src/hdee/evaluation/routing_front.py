"""The routing front: every router kind x route tokens x context tokens x routed method
(`routing.front`; context tokens for the previous-context methods only), its
perplexity against its inference FLOPs per token, beside the all-expert reference method, and the
routed methods chosen on validation windows.

Each point is scored on the test windows and on the validation windows after the prior's (the
same selection windows the main method is chosen on). Two choices are made on validation alone,
and written down here before any run:

* `recommended`: among the points whose inference FLOPs per token (mean over the trained domains)
  are at most `FLOPS_SHARE` of the reference's, the lowest validation mean log-perplexity over the
  trained domains;
* `top1`: the same among the points that run one expert (k = 1), at most `TOP1_FLOPS_SHARE`.

Their test perplexity is then read against the reference's: the target is met when the geometric
mean ratio over the trained domains is at most `PPL_RATIO` (`TOP1_PPL_RATIO` for top-1). No domain
label and no per-domain prior is read by any routed method.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from hdee.ensemble import scoring
from hdee.ensemble.inference_flops import method_flops, window_flops
from hdee.ensemble.mixing import perplexity
from hdee.ensemble.routing import RoutedEvaluator
from hdee.registry import MIXING_METHODS

if TYPE_CHECKING:
    from hdee.config import ExperimentConfig
    from hdee.core.layout import RunLayout
    from hdee.ensemble.experts import ExpertInfo
    from hdee.plan.schema import EnsembleSpec

FLOPS_SHARE, PPL_RATIO = 1 / 3, 1.03
TOP1_FLOPS_SHARE, TOP1_PPL_RATIO = 0.15, 1.08


def _mean_log(per: Mapping[str, float], domains: list[str]) -> float | None:
    logs = [math.log(per[d]) for d in domains if d in per]
    return sum(logs) / len(logs) if logs and len(logs) == len(domains) else None


def _mean(per: Mapping[str, float], domains: list[str]) -> float:
    return float(np.mean([per[d] for d in domains]))


def sweep(
    cfg: "ExperimentConfig",
    layout: "RunLayout",
    infos: Mapping[str, "ExpertInfo"],
    specs: Mapping[str, "EnsembleSpec"],
    windows: Mapping[str, Mapping[str, np.ndarray]],
    reader: scoring.TokenReader,
) -> dict[str, list[dict[str, Any]]]:
    """Per ensemble of more than one expert (of `routing.front.strategies`): one point per router
    kind x route tokens x method (x context tokens for the previous-context methods), with its test
    and validation perplexity and FLOPs per domain."""
    front = cfg.routing.front
    names = [n for n, s in specs.items() if len(s.experts) > 1 and (front.strategies is None or n in front.strategies)]
    if not front.routers or not names:
        return {}
    contexts = front.context_tokens or [cfg.routing.context_tokens]
    evaluators = []
    for kind in front.routers:
        for r in front.route_tokens or [cfg.route_tokens]:
            for c in contexts:
                routing = cfg.routing.model_copy(update={"router": kind, "route_tokens": r, "context_tokens": c})
                ev = RoutedEvaluator(cfg.model_copy(update={"routing": routing}), layout, infos, reader)
                # a prefix method reads no previous context: once per route tokens
                methods = [m for m in front.methods if c == contexts[0] or MIXING_METHODS.get(m).context == "previous"]
                evaluators.append((kind, r, c, ev, methods))
    skip = cfg.eval.prior_sequences
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        ids = list(specs[name].experts)
        full = [window_flops(infos[e], cfg.data.seq_len) for e in ids]
        points = {(kind, r, c, m): {"router": kind, "route_tokens": r, "method": m, "k": MIXING_METHODS.get(m).routed,
                                    "context_tokens": c if MIXING_METHODS.get(m).context == "previous" else None,
                                    "test": {}, "val": {}, "flops": {}}
                  for kind, r, c, _, methods in evaluators for m in methods}
        for d in cfg.eval_domains:
            lp = scoring.stacked_scores(layout, ids, d, "test")
            val_lp = scoring.stacked_scores(layout, ids, d, "val")
            for kind, r, c, ev, methods in evaluators:
                for m in methods:
                    entry, point = MIXING_METHODS.get(m), points[(kind, r, c, m)]
                    mixed, cost = ev.mix(ids, d, windows["test"][d], lp, entry.routed, entry.context, entry.weights)
                    point["test"][d] = perplexity(mixed)
                    point["flops"][d] = method_flops(m, full, cfg.data.seq_len, routed=cost)
                    if val_lp.shape[1] > skip:
                        mixed, _ = ev.mix(ids, d, windows["val"][d], val_lp, entry.routed, entry.context, entry.weights, "val")
                        point["val"][d] = perplexity(mixed[skip:])
        for kind, r, c, ev, methods in evaluators:
            router = ev.router_of(ids)
            for m in methods:
                points[(kind, r, c, m)]["temperature"] = router.temperature if router is not None else None
        out[name] = list(points.values())
    return out


def summarise(points: list[dict[str, Any]], reference: Mapping[str, Mapping[str, float]], trained: list[str],
              reference_method: str) -> dict[str, Any]:
    """Each point's means over the trained domains against the reference's (`reference`: its
    "test", "val" and "flops" per domain), and the two routed methods chosen on validation."""
    ref_test, ref_val = _mean_log(reference["test"], trained), _mean_log(reference["val"], trained)
    ref_flops = _mean(reference["flops"], trained)
    rows = []
    for p in points:
        test, val = _mean_log(p["test"], trained), _mean_log(p["val"], trained)
        rows.append({
            **{k: p[k] for k in ("router", "route_tokens", "context_tokens", "method", "k", "temperature")},
            "test_mean_log_ppl": test,
            "val_mean_log_ppl": val,
            "test_ratio": None if test is None or ref_test is None else math.exp(test - ref_test),
            "val_ratio": None if val is None or ref_val is None else math.exp(val - ref_val),
            "flops_per_token": _mean(p["flops"], trained),
            "flops_share": _mean(p["flops"], trained) / ref_flops,
        })

    def choose(share: float, ppl_ratio: float, top1: bool) -> dict[str, Any] | None:
        pool = [r for r in rows if r["val_mean_log_ppl"] is not None and r["flops_share"] <= share and (r["k"] == 1 or not top1)]
        if not pool:
            return None
        best = min(pool, key=lambda r: r["val_mean_log_ppl"])
        return {**best, "flops_limit": share, "ppl_limit": ppl_ratio,
                "target_met": best["test_ratio"] is not None and best["test_ratio"] <= ppl_ratio}

    return {
        "reference": {"method": reference_method, "test_mean_log_ppl": ref_test, "val_mean_log_ppl": ref_val,
                      "flops_per_token": ref_flops},
        "trained_domains": trained,
        "points": rows,
        "recommended": choose(FLOPS_SHARE, PPL_RATIO, top1=False),
        "top1": choose(TOP1_FLOPS_SHARE, TOP1_PPL_RATIO, top1=True),
    }


def routing_front(cfg: "ExperimentConfig", layout: "RunLayout", infos: Mapping[str, "ExpertInfo"],
                  specs: Mapping[str, "EnsembleSpec"], evaluated: Mapping[str, Any],
                  windows: Mapping[str, Mapping[str, np.ndarray]], reader: scoring.TokenReader) -> dict[str, Any]:
    """The front of one ensemble kind (`evaluated`: its ensembles' results) -> {ensemble: summary}."""
    ref = cfg.routing.front.reference
    trained = list(cfg.train_domains)
    out = {}
    for name, points in sweep(cfg, layout, infos, specs, windows, reader).items():
        ens = evaluated[name]
        reference = {"test": ens["ppl"][ref], "val": ens["val_ppl"].get(ref, {}), "flops": ens["inference_flops"][ref]}
        out[name] = {**summarise(points, reference, trained, ref), "per_domain": points}
    return out
