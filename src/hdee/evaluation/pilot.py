"""Validation pilots: a run's trained experts scored on validation windows only, never on the test split.

The pre-registered analysis (docs/preregistration.toml) must be fixed before any test-split number
of its experiment exists, yet the regime gates and the power calculation that set it need data:
validation data suffices for both. `hdee run --pilot` trains every job of every repeat and writes
`results/pilot*.json` from the val windows alone: each expert's validation perplexity on every
domain, each ensemble's mixing methods and its seed models on the selection windows, and the method
chosen on them. The score files are the ones the full evaluation reads later, so nothing is scored
twice; no test window is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hdee.config import ExperimentConfig
from hdee.core.fsutil import atomic_write_json
from hdee.core.layout import RunLayout
from hdee.core.results_schema import SCHEMA_VERSION
from hdee.ensemble import scoring
from hdee.ensemble.experts import read_expert
from hdee.ensemble.mixing import estimate_prior, mix_cached, perplexity
from hdee.evaluation.method_choice import candidates, choose_method
from hdee.plan.schema import EnsembleSpec
from hdee.registry import MIXING_METHODS

SPLIT = "val"


def _val_scores(cfg: ExperimentConfig, layout: RunLayout, experts: Mapping[str, Path]) -> dict[str, dict[str, float]]:
    """Each expert's perplexity on all val windows of every eval domain (cached score files)."""
    windows = {d: scoring.domain_windows(layout, d, SPLIT, cfg) for d in cfg.eval_domains}
    ppl: dict[str, dict[str, float]] = {}
    for eid, edir in experts.items():
        scorer = scoring.lazy_scorer()  # one load per expert, none when everything is cached
        ppl[eid] = {}
        for d, w in windows.items():
            lp = scoring.score_cached(edir, w, layout.score_path(eid, d, SPLIT), cfg.eval.batch_size, scorer)
            if len(w):
                ppl[eid][d] = perplexity(lp)
    return ppl


def _mix_val(cfg: ExperimentConfig, layout: RunLayout, spec: EnsembleSpec, methods: list[str],
             experts: Mapping[str, Path]) -> dict[str, Any]:
    """One ensemble (and its seed models, mixed the same way) on the selection windows."""
    ids = list(spec.experts)
    seeds = [e for e in spec.meta.get("seeds", []) if e in experts]
    kw = {"top_k_experts": cfg.eval.top_k, "prior_alpha": cfg.eval.prior_alpha}
    val_ppl: dict[str, dict[str, float]] = {m: {} for m in methods}
    seed_val: dict[str, dict[str, float]] = {m: {} for m in methods} if seeds else {}
    priors, select_windows = {}, {}
    for d in cfg.eval_domains:
        prior_lp, select_lp = scoring.split_val(scoring.stacked_scores(layout, ids, d, SPLIT), cfg.eval.prior_sequences)
        priors[d] = np.exp(estimate_prior(prior_lp, cfg.eval.prior_alpha)).tolist()
        select_windows[d] = int(select_lp.shape[1])
        if not select_lp.shape[1]:
            continue
        for m in methods:
            val_ppl[m][d] = perplexity(mix_cached(m, select_lp, prior_lp, **kw))
        if seeds:
            seed_prior, seed_select = scoring.split_val(scoring.stacked_scores(layout, seeds, d, SPLIT), cfg.eval.prior_sequences)
            for m in methods:
                seed_val[m][d] = perplexity(mix_cached(m, seed_select, seed_prior, **kw))
    out = {"experts": ids, "meta": dict(spec.meta), "val_ppl": val_ppl, "priors": priors, "select_windows": select_windows}
    if seed_val:
        out["seed_val_ppl"] = seed_val
    return out


def pilot_evaluate(cfg: ExperimentConfig, layout: RunLayout, experts: Mapping[str, str | Path],
                   ensembles: Mapping[str, EnsembleSpec], path: Path) -> dict[str, Any]:
    """Score `experts` on the val windows, mix `ensembles` on the selection windows, write `path`."""
    experts = {eid: Path(d) for eid, d in experts.items()}
    methods = [m for m in candidates(list(cfg.eval.methods)) if not MIXING_METHODS.get(m).routed]
    expert_val = _val_scores(cfg, layout, experts)
    mixed = {name: _mix_val(cfg, layout, spec, methods, experts) for name, spec in ensembles.items()}
    choice = choose_method({n: e["val_ppl"] for n, e in mixed.items() if len(e["experts"]) > 1}, methods, cfg.eval.method)
    results = {
        "schema_version": SCHEMA_VERSION,
        "pilot": True,
        "split": SPLIT,
        "config": cfg.name,
        "config_sha256": cfg.fingerprint(),
        "methods": methods,
        "ensemble": cfg.ensemble,
        "method_choice": choice,
        "domains": [{"name": d, "role": cfg.domain(d).role, "tier": cfg.tier_of(d)} for d in cfg.eval_domains],
        "experts": {eid: {"meta": read_expert(d).record.as_dict(), "val_ppl": expert_val[eid]} for eid, d in experts.items()},
        "seed_corpus": {"domains": cfg.seed_domains, "disjoint": all(cfg.domain(d).role == "seed" for d in cfg.seed_domains)},
        "ensembles": mixed,
    }
    atomic_write_json(path, results)
    return results


def pilot_summary(runs: list[dict[str, Any]], seed_draws: list[dict[str, Any]]) -> dict[str, Any]:
    """The regime gates of the pilots of a run's repeats, with the method chosen over them."""
    from hdee.report.compare import method_for
    from hdee.report.gates import regime_gates

    choice = method_for([r["method_choice"] for r in runs])
    return {"repeats": len(runs), "method": choice["method"], "gates": regime_gates(runs, seed_draws, choice["method"])}
