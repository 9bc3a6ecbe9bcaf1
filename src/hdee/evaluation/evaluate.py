"""Per-domain perplexities of experts and ensembles -> results.json and results.csv.

Each expert is scored once per domain (cached under scores/); every mixing method except
`product` is then computed from those cached scores. `product` runs the models on the first
`eval.product_windows` test windows of each domain (its token counts are in the results).
Every method is also scored on the validation windows after the prior's, where the main
table's method is chosen (`hdee.evaluation.method_choice`); the chosen method's per-window losses are kept
for the statistics. Both ensembles of each strategy are evaluated from the same experts: the
config's `ensemble` (`ensembles`) and the other kind (`alt`). Routed methods (`routed-top<k>`)
mix the cached scores of the experts their router picks (hdee.ensemble.routing), and every
method's inference FLOPs per token are recorded (hdee.ensemble.inference_flops).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from hdee.config import ExperimentConfig
from hdee.core.errors import EnsembleError
from hdee.core.fsutil import atomic_write_json, atomic_write_text
from hdee.ensemble import (
    scoring,  # attributes looked up at call time, so a patched read_tokens is seen
)
from hdee.data.shards import eos_of
from hdee.ensemble.documents import document_sums, target_documents
from hdee.ensemble.experts import load_model, read_expert
from hdee.ensemble.inference_flops import method_flops, window_flops
from hdee.ensemble.mixing import (
    best_expert_index,
    estimate_prior,
    mix_cached,
    perplexity,
)
from hdee.ensemble.routing import RoutedEvaluator
from hdee.evaluation.method_choice import candidates, choose_method
from hdee.evaluation.routing_front import routing_front
from hdee.plan.schema import ENSEMBLE_KINDS, EnsembleSpec
from hdee.registry import MIXING_METHODS
from hdee.core.layout import RunLayout
from hdee.core.results_schema import SCHEMA_VERSION

#: called after each expert is scored (or found cached): (expert id, experts done, experts in all)
ScoreProgress = Callable[[str, int, int], None]


def _score_all(
    cfg: ExperimentConfig,
    layout: RunLayout,
    experts: Mapping[str, Path],
    reader: scoring.TokenReader,
    progress: ScoreProgress | None = None,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, np.ndarray]]]:
    """Make sure every (expert, domain, split) score file is cached and valid.

    Returns each expert's perplexity per split and domain and the windows per split and domain; the
    scores themselves stay on disk and are read back one ensemble and domain at a time.
    """
    windows = {
        split: {d: scoring.domain_windows(layout, d, split, cfg, reader) for d in cfg.eval_domains}
        for split in scoring.SPLITS_SCORED
    }
    for d, w in windows["test"].items():
        if len(w) == 0:
            raise EnsembleError(f"{layout.domain_dir(d)}: test split is shorter than one window of {cfg.data.seq_len + 1} tokens")
    ppl: dict[str, dict[str, dict[str, float]]] = {split: {} for split in scoring.SPLITS_SCORED}
    for eid, edir in experts.items():
        scorer = scoring.lazy_scorer()  # one load per expert for all domains, none when everything is cached
        for split in scoring.SPLITS_SCORED:
            ppl[split][eid] = {}
            for d, w in windows[split].items():
                lp = scoring.score_cached(edir, w, layout.score_path(eid, d, split), cfg.eval.batch_size, scorer)
                if len(w):
                    ppl[split][eid][d] = perplexity(lp)
        if progress is not None:
            progress(eid, len(ppl["test"]), len(experts))
    return ppl, windows


def _without_each(cfg: ExperimentConfig, layout: RunLayout, ids: list[str], method: str) -> dict[str, Any]:
    """Opt-out of one expert at a time: the ensemble's test perplexity per domain without it, from cached scores."""
    if len(ids) < 2 or not MIXING_METHODS.get(method).cached:
        return {}
    ppl: dict[str, dict[str, float]] = {e: {} for e in ids}
    kw = {"top_k_experts": cfg.eval.top_k, "prior_alpha": cfg.eval.prior_alpha}
    for d in cfg.eval_domains:
        lp = scoring.stacked_scores(layout, ids, d, "test")
        prior_lp, _ = scoring.split_val(scoring.stacked_scores(layout, ids, d, "val"), cfg.eval.prior_sequences)
        for k, e in enumerate(ids):
            keep = [i for i in range(len(ids)) if i != k]
            ppl[e][d] = perplexity(mix_cached(method, lp[keep], prior_lp[keep], **kw))
    return {"method": method, "ppl": ppl}


def _csv(results: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "name", "method", "domain", "ppl"])
    for eid, e in results["experts"].items():
        for d, v in e["ppl"].items():
            w.writerow(["expert", eid, "", d, repr(v)])
    kinds = [(results["ensemble"], results["ensembles"])]
    if results.get("alt"):
        kinds.append((results["alt"]["ensemble"], results["alt"]["ensembles"]))
    for kind, ensembles in kinds:
        for name, ens in ensembles.items():
            for m, per in ens["ppl"].items():
                for d, v in per.items():
                    w.writerow([f"ensemble:{kind}", name, m, d, repr(v)])
    return buf.getvalue()


def _mix(
    cfg: ExperimentConfig,
    layout: RunLayout,
    spec: EnsembleSpec,
    experts: Mapping[str, Path],
    expert_ppl: dict[str, dict[str, float]],
    test_windows: dict[str, np.ndarray],
    methods: list[str],
    routed: RoutedEvaluator,
    docs: dict[str, np.ndarray | None],
) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """One ensemble on every domain: test perplexity and inference FLOPs per method, perplexity on
    the selection windows per candidate method (and of the strategy's own seed models mixed the same
    way), each cached method's summed loss per test document, and (kept apart) each method's
    per-window mean log-prob."""
    ids, domains = list(spec.experts), cfg.eval_domains
    selectable = candidates(methods)
    ppl: dict[str, dict[str, float]] = {m: {} for m in methods}
    val_ppl: dict[str, dict[str, float]] = {m: {} for m in selectable}
    window_lp: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    doc_nll: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    seeds = [e for e in spec.meta.get("seeds", []) if e in experts]
    seed_val: dict[str, dict[str, float]] = {m: {} for m in selectable} if seeds else {}
    flops: dict[str, dict[str, float]] = {m: {} for m in methods}  # inference FLOPs per scored token
    full = [window_flops(routed.infos[e], cfg.data.seq_len) for e in ids]
    priors: dict[str, list[float]] = {}
    best: dict[str, str] = {}
    product_tokens: dict[str, int] = {}
    select_windows: dict[str, int] = {}
    models: list[torch.nn.Module] = []
    kw = {"top_k_experts": cfg.eval.top_k, "prior_alpha": cfg.eval.prior_alpha}
    for d in domains:
        lp = scoring.stacked_scores(layout, ids, d, "test")
        prior_lp, select_lp = scoring.split_val(scoring.stacked_scores(layout, ids, d, "val"), cfg.eval.prior_sequences)
        priors[d] = np.exp(estimate_prior(prior_lp, cfg.eval.prior_alpha)).tolist()
        best[d] = ids[best_expert_index(lp)]
        select_windows[d] = int(select_lp.shape[1])
        if seed_val and select_lp.shape[1]:
            seed_prior, seed_select = scoring.split_val(scoring.stacked_scores(layout, seeds, d, "val"), cfg.eval.prior_sequences)
            for m in seed_val:
                seed_val[m][d] = perplexity(mix_cached(m, seed_select, seed_prior, **kw))
        for m in methods:
            entry = MIXING_METHODS.get(m)
            if entry.routed:
                mixed, cost = routed.mix(ids, d, test_windows[d], lp, entry.routed, entry.context, entry.weights)
                window_lp[m][d] = mixed.mean(axis=1).tolist()
                ppl[m][d], flops[m][d] = perplexity(mixed), method_flops(m, full, cfg.data.seq_len, routed=cost)
                continue
            flops[m][d] = method_flops(m, full, cfg.data.seq_len, best=ids.index(best[d]))
            if entry.score is not None:
                mixed = mix_cached(m, lp, prior_lp, **kw)
                window_lp[m][d] = mixed.mean(axis=1).tolist()
                if docs.get(d) is not None:
                    doc_nll[m][d] = document_sums(mixed, docs[d])[0]
                ppl[m][d] = perplexity(mixed)
                if m in val_ppl and select_lp.shape[1]:
                    val_ppl[m][d] = perplexity(mix_cached(m, select_lp, prior_lp, **kw))
            elif len(ids) == 1:  # a mixture of one distribution is itself: exact on all windows
                ppl[m][d] = expert_ppl[ids[0]][d]
                product_tokens[d] = int(lp.shape[1] * lp.shape[2])
            else:  # it needs full distributions: the models run on the first product_windows windows
                if not models:
                    models = [load_model(experts[e]) for e in ids]
                sub = test_windows[d][: cfg.eval.product_windows]
                ppl[m][d] = perplexity(entry.score_models(models, sub, cfg.eval.batch_size))
                product_tokens[d] = int(sub.shape[0] * (sub.shape[1] - 1))
    models.clear()
    out = {
        "experts": ids,
        "meta": dict(spec.meta),
        "ppl": ppl,
        "val_ppl": val_ppl,
        "select_windows": select_windows,
        "priors": priors,
        "best_expert": best,
        "product_windows": max(product_tokens.values(), default=0) // cfg.data.seq_len,
        "product_tokens": product_tokens,
        "inference_flops": flops,
        "doc_nll": {m: per for m, per in doc_nll.items() if per},
    }
    if seed_val:
        out["seed_val_ppl"] = seed_val
    if any(MIXING_METHODS.get(m).routed for m in methods):
        out["routing"] = routed.setup(ids)
    return out, window_lp


def _evaluate_kind(
    cfg: ExperimentConfig,
    layout: RunLayout,
    specs: Mapping[str, EnsembleSpec],
    experts: Mapping[str, Path],
    expert_ppl: dict[str, dict[str, float]],
    test_windows: dict[str, np.ndarray],
    methods: list[str],
    routed: RoutedEvaluator,
    docs: dict[str, np.ndarray | None],
) -> dict[str, Any]:
    """Every ensemble of one kind, the main method chosen for them, and its per-window losses."""
    ensembles: dict[str, Any] = {}
    window_lp: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, spec in specs.items():
        ensembles[name], window_lp[name] = _mix(cfg, layout, spec, experts, expert_ppl, test_windows, methods, routed, docs)
    multi = {n: e["val_ppl"] for n, e in ensembles.items() if len(e["experts"]) > 1}
    choice = choose_method(multi, methods, cfg.eval.method)
    for name, ens in ensembles.items():
        # each test window's mean loss under every cached method, for the statistics (repeats may
        # choose different methods; the comparison then picks one for all of them)
        ens["window_nll"] = {m: {d: [-x for x in xs] for d, xs in per.items()} for m, per in window_lp[name].items() if per}
    return {"method_choice": choice, "ensembles": ensembles}


def _documents(layout: RunLayout, domain: str, windows: np.ndarray) -> np.ndarray | None:
    """Each test target's document (hdee.ensemble.documents), when the domain's shards say what EOS is."""
    eos = eos_of(layout.domain_dir(domain))
    return None if eos is None else target_documents(windows, eos)


def _check_specs(ensembles: Mapping[str, EnsembleSpec], experts: Mapping[str, Path]) -> None:
    for name, spec in ensembles.items():
        missing = [e for e in spec.experts if e not in experts]
        if not spec.experts or missing:
            raise EnsembleError(f"ensemble {name!r}: unknown expert {missing[0]!r}" if missing else f"ensemble {name!r} has no experts")


def evaluate(
    cfg: ExperimentConfig,
    layout: RunLayout,
    experts: Mapping[str, str | Path],
    ensembles: Mapping[str, EnsembleSpec],
    reader: scoring.TokenReader | None = None,
    repeat: int = 0,
    vary: str = "domain-phase",
    alt: Mapping[str, EnsembleSpec] | None = None,
    results_path: Path | None = None,
    progress: ScoreProgress | None = None,
    extra: Mapping[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score (or reuse cached scores of) every expert on every eval domain, mix, write results.

    `ensembles` are the config's kind (`cfg.ensemble`); `alt`, when given, the same strategies'
    other kind from the same experts (the forest beside the final experts, or the reverse).
    `reader(layout, domain, split)` returns token ids; the default reads the run's shards.
    The results go to `layout.results_path(repeat, vary)`, or to `results_path` (another file of
    `layout`: new text, an opt-out), with the CSV beside it (`RunLayout.csv_beside`). Each
    ensemble of the main kind also gets its leave-one-out perplexities (`without_each`, in the
    chosen method). `extra` adds top-level keys (what was evaluated, when not the run's own data).
    `provenance` (hdee.core.provenance: versions, hardware, command, job costs) is stored as given.
    """
    reader = reader or scoring.read_tokens
    experts = {eid: Path(d) for eid, d in experts.items()}
    _check_specs(ensembles, experts)
    _check_specs(alt or {}, experts)
    infos = {eid: read_expert(d) for eid, d in experts.items()}
    domains = cfg.eval_domains
    split_ppl, windows = _score_all(cfg, layout, experts, reader, progress)
    test_windows = windows["test"]
    expert_ppl = split_ppl["test"]
    docs = {d: _documents(layout, d, w) for d, w in test_windows.items()}
    routed = RoutedEvaluator(cfg, layout, infos, reader)
    main = _evaluate_kind(cfg, layout, ensembles, experts, expert_ppl, test_windows, list(cfg.eval.methods), routed, docs)
    for name, spec in ensembles.items():
        main["ensembles"][name]["without_each"] = _without_each(cfg, layout, list(spec.experts), main["method_choice"]["method"])
    results = {
        "schema_version": SCHEMA_VERSION,
        "config": cfg.name,
        "methods": list(cfg.eval.methods),
        "ensemble": cfg.ensemble,
        "method_choice": main["method_choice"],
        "domains": [
            {
                "name": d,
                "role": cfg.domain(d).role,
                "tier": cfg.tier_of(d),
                "tokens": int(test_windows[d].shape[0] * cfg.data.seq_len),
                "windows": int(test_windows[d].shape[0]),
                **({"doc_tokens": document_sums(np.zeros(docs[d].shape), docs[d])[1]} if docs[d] is not None else {}),
            }
            for d in domains
        ],
        "experts": {eid: {"meta": infos[eid].record.as_dict(), "ppl": expert_ppl[eid], "val_ppl": split_ppl["val"][eid]}
                    for eid in experts},
        "seed_corpus": {"domains": cfg.seed_domains, "disjoint": all(cfg.domain(d).role == "seed" for d in cfg.seed_domains)},
        "ensembles": main["ensembles"],
        **dict(extra or {}),
    }
    if alt:  # from the cached scores only: methods that run the models (product) stay with the main kind
        other = next(k for k in ENSEMBLE_KINDS if k != cfg.ensemble)
        cached = [m for m in cfg.eval.methods if MIXING_METHODS.get(m).cached or MIXING_METHODS.get(m).routed]
        results["alt"] = {"ensemble": other, **_evaluate_kind(cfg, layout, alt, experts, expert_ppl, test_windows, cached, routed, docs)}
    if cfg.routing.front.routers:
        results["routing_front"] = {cfg.ensemble: routing_front(cfg, layout, infos, ensembles, main["ensembles"], windows, reader)}
        if alt:
            results["routing_front"][results["alt"]["ensemble"]] = routing_front(
                cfg, layout, infos, alt, results["alt"]["ensembles"], windows, reader)
    if provenance is not None:
        results["provenance"] = provenance
    json_path = results_path if results_path is not None else layout.results_path(repeat, vary)
    atomic_write_json(json_path, results)
    atomic_write_text(RunLayout.csv_beside(json_path), _csv(results))
    return results
