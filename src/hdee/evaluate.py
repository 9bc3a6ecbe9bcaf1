"""Per-domain perplexities of experts and ensembles -> results.json and results.csv.

Each expert is scored once per domain (cached under scores/); every mixing method except
`product` is then computed from those cached scores. `product` runs the models on the first
`eval.product_windows` test windows of each domain (its token counts are in the results).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from hdee.config import ExperimentConfig
from hdee.ensemble import scoring  # attributes looked up at call time, so a patched read_tokens is seen
from hdee.ensemble.experts import load_model, read_expert
from hdee.ensemble.mixing import best_expert_index, estimate_prior, mix_cached, perplexity
from hdee.ensemble.product import product_scores
from hdee.errors import EnsembleError
from hdee.fsutil import atomic_write_json, atomic_write_text
from hdee.layout import RunLayout

#: left out when choosing the default method: an oracle and a bounded-subset reference
REFERENCE_METHODS = ("best-expert", "product")


@dataclass(frozen=True)
class EnsembleSpec:
    experts: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def _score_all(
    cfg: ExperimentConfig, layout: RunLayout, experts: Mapping[str, Path], reader: scoring.TokenReader
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Make sure every (expert, domain, split) score file is cached and valid.

    Returns each expert's test perplexity per domain and the test windows per domain; the
    scores themselves stay on disk and are read back one ensemble and domain at a time.
    """
    windows = {
        split: {d: scoring.domain_windows(layout, d, split, cfg, reader) for d in cfg.eval_domains}
        for split in scoring.SPLITS_SCORED
    }
    for d, w in windows["test"].items():
        if len(w) == 0:
            raise EnsembleError(f"{layout.domain_dir(d)}: test split is shorter than one window of {cfg.data.seq_len + 1} tokens")
    ppl: dict[str, dict[str, float]] = {}
    for eid, edir in experts.items():
        scorer = scoring.lazy_scorer()  # one load per expert for all domains, none when everything is cached
        ppl[eid] = {}
        for split in scoring.SPLITS_SCORED:
            for d, w in windows[split].items():
                lp = scoring.score_cached(edir, w, scoring.score_path(layout, eid, d, split), cfg.eval.batch_size, scorer)
                if split == "test":
                    ppl[eid][d] = perplexity(lp)
    return ppl, windows["test"]


def _stacked(layout: RunLayout, ids: list[str], domain: str, split: str) -> np.ndarray:
    return np.stack([np.load(scoring.score_path(layout, e, domain, split), allow_pickle=False) for e in ids])


def default_method(ensembles: Mapping[str, Mapping[str, Any]], methods: list[str], domains: list[str]) -> str:
    """The method with the lowest mean log-perplexity over all domains and ensembles of > 1 expert."""
    means: dict[str, list[float]] = {}
    for ens in ensembles.values():
        if len(ens["experts"]) < 2:
            continue
        for m in methods:
            if m not in REFERENCE_METHODS:
                means.setdefault(m, []).append(sum(math.log(ens["ppl"][m][d]) for d in domains) / len(domains))
    if not means:
        return methods[0]
    return min(means, key=lambda m: (sum(means[m]) / len(means[m]), m))


def _csv(results: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "name", "method", "domain", "ppl"])
    for eid, e in results["experts"].items():
        for d, v in e["ppl"].items():
            w.writerow(["expert", eid, "", d, repr(v)])
    for name, ens in results["ensembles"].items():
        for m, per in ens["ppl"].items():
            for d, v in per.items():
                w.writerow(["ensemble", name, m, d, repr(v)])
    return buf.getvalue()


def evaluate(
    cfg: ExperimentConfig,
    layout: RunLayout,
    experts: Mapping[str, str | Path],
    ensembles: Mapping[str, EnsembleSpec],
    reader: scoring.TokenReader | None = None,
    results_path: str | Path | None = None,
) -> dict[str, Any]:
    """Score (or reuse cached scores of) every expert on every eval domain, mix, write results.

    `reader(layout, domain, split)` returns token ids; the default reads the run's shards.
    `results_path` (default `layout.results_json`) is where the JSON goes, with the CSV beside
    it under the same stem; the pipeline writes repeat k > 0 to `results-repeat<k>.json`.
    """
    reader = reader or scoring.read_tokens
    experts = {eid: Path(d) for eid, d in experts.items()}
    for name, spec in ensembles.items():
        missing = [e for e in spec.experts if e not in experts]
        if not spec.experts or missing:
            raise EnsembleError(f"ensemble {name!r}: unknown expert {missing[0]!r}" if missing else f"ensemble {name!r} has no experts")
    metas = {eid: read_expert(d).meta for eid, d in experts.items()}
    domains = cfg.eval_domains
    methods = list(cfg.eval.methods)
    expert_ppl, test_windows = _score_all(cfg, layout, experts, reader)

    out_ensembles: dict[str, Any] = {}
    for name, spec in ensembles.items():
        ids = list(spec.experts)
        ppl: dict[str, dict[str, float]] = {m: {} for m in methods}
        priors: dict[str, list[float]] = {}
        best: dict[str, str] = {}
        product_tokens: dict[str, int] = {}
        models: list[torch.nn.Module] = []
        for d in domains:
            lp = _stacked(layout, ids, d, "test")
            vlp = _stacked(layout, ids, d, "val")
            priors[d] = np.exp(estimate_prior(vlp, cfg.eval.prior_alpha)).tolist()
            best[d] = ids[best_expert_index(lp)]
            for m in methods:
                if m != "product":
                    ppl[m][d] = perplexity(mix_cached(m, lp, vlp, top_k_experts=cfg.eval.top_k, prior_alpha=cfg.eval.prior_alpha))
                elif len(ids) == 1:  # the geometric mean of one distribution is itself: exact on all windows
                    ppl[m][d] = expert_ppl[ids[0]][d]
                    product_tokens[d] = int(lp.shape[1] * lp.shape[2])
                else:
                    if not models:
                        models = [load_model(experts[e]) for e in ids]
                    sub = test_windows[d][: cfg.eval.product_windows]
                    ppl[m][d] = perplexity(product_scores(models, sub, cfg.eval.batch_size))
                    product_tokens[d] = int(sub.shape[0] * (sub.shape[1] - 1))
        models.clear()
        out_ensembles[name] = {
            "experts": ids,
            "meta": dict(spec.meta),
            "ppl": ppl,
            "priors": priors,
            "best_expert": best,
            "product_windows": max(product_tokens.values(), default=0) // cfg.data.seq_len,
            "product_tokens": product_tokens,
        }

    results = {
        "config": cfg.name,
        "methods": methods,
        "default_method": default_method(out_ensembles, methods, domains),
        "domains": [
            {
                "name": d,
                "role": cfg.domain(d).role,
                "tier": cfg.tier_of(d),
                "tokens": int(test_windows[d].shape[0] * cfg.data.seq_len),
            }
            for d in domains
        ],
        "experts": {eid: {"meta": metas[eid], "ppl": expert_ppl[eid]} for eid in experts},
        "ensembles": out_ensembles,
    }
    json_path = Path(results_path) if results_path is not None else layout.results_json
    atomic_write_json(json_path, results)
    atomic_write_text(json_path.with_suffix(".csv"), _csv(results))
    return results
