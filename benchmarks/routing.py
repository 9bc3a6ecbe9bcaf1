"""Routed inference against all-expert mixing on a finished run, with `ensemble = "all"`.

Takes a finished run (default `runs/embedded`) and each strategy's forest, `ensemble = "all"`
(every expert the strategy trained: 9 for the embedded config; plans from before both ensemble
kinds were planned: every training job a strategy used), and evaluates uniform,
prefix-posterior, cached-prior, routed-top1, routed-top2 and best-expert with each router kind.
It only reads the run: scores missing there, routers and results are written under --work. Prints, per strategy, perplexity (geometric mean
over the trained and the held-out domains) and inference FLOPs per token, the routers' top-1
accuracy on trained domains, and the target check: routed-top1 within 3% of the all-expert
cached prior's trained-domain perplexity at <= 1/5 of its inference FLOPs, and what perfect
routing would give with the same prefix model (the prefix's own cost).

    .venv/bin/python benchmarks/routing.py runs/embedded --work /tmp/routing-bench
    .venv/bin/python benchmarks/routing.py runs/tiny --route-tokens 4 8    # a sweep
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

import numpy as np

from hdee.config import ExperimentConfig
from hdee.core.fsutil import atomic_write_json
from hdee.data.shards import read_split
from hdee.evaluation.evaluate import EnsembleSpec, evaluate
from hdee.report.compare import inference_cost, strategy_order
from hdee.core.layout import RunLayout
from hdee.run import ensemble_specs, expert_dirs, load_run

METHODS = ["uniform", "prefix-posterior", "cached-prior", "routed-top1", "routed-top2", "best-expert"]
TARGET_PPL, TARGET_FLOPS = 1.03, 0.2


def forests(src: RunLayout) -> tuple[dict[str, Path], dict[str, EnsembleSpec]]:
    """Every expert the run scores, and each strategy's forest (all its experts; one-model strategies
    left out). In plans from before both ensemble kinds were planned, a strategy's forest is every
    training job it used."""
    plan = load_run(src.root).plan
    experts = expert_dirs(plan, src)
    if all(e.members for e in plan.ensembles.values()):
        specs = ensemble_specs(plan, src, "all")
    else:
        trained = plan.jobs_of("train")
        specs = {n: EnsembleSpec([j.id for j in trained if n in j.used_by]) for n in plan.ensembles}
        experts.update({j.id: src.expert_dir(j.id) for j in trained})
    missing = [e for e, d in experts.items() if not (d / "hdee.json").is_file()]
    if missing:
        raise SystemExit(f"{src.root}: not a finished run (no expert {missing[0]})")
    return experts, {n: EnsembleSpec(s.experts) for n, s in specs.items() if len(s.experts) > 1}


def accuracy(res: dict, name: str) -> float | None:
    """Share of trained-domain windows whose top-1 route is the expert trained on that domain."""
    ens = res["ensembles"][name]
    share = (ens.get("routing") or {}).get("top1_share") or {}
    own = {res["experts"][e]["meta"].get("domain"): e for e in ens["experts"]}
    hits = [share[d][own[d]] for d in share if d in own]
    return sum(hits) / len(hits) if hits else None


def perfect_routing_ppl(res: dict, name: str, work: RunLayout, route_tokens: int) -> float:
    """Trained-domain perplexity (geometric mean) if every window went to its domain's own expert,
    with the same prefix model on the first R positions: what the prefix alone costs."""
    ens = res["ensembles"][name]
    prefix = ens["routing"]["prefix_model"]
    own = {res["experts"][e]["meta"].get("domain"): e for e in ens["experts"]}
    logs = []
    for d in (x["name"] for x in res["domains"] if x["role"] == "train"):
        head = np.load(work.score_path(prefix, d, "test"))[:, :route_tokens]
        tail = np.load(work.score_path(own[d], d, "test"))[:, route_tokens:]
        logs.append(-np.concatenate([head, tail], axis=1).mean())
    return math.exp(sum(logs) / len(logs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", default="runs/embedded", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where scores, routers and results go (default RUN_DIR-routing)")
    ap.add_argument("--routers", nargs="+", default=["tfidf", "hidden"])
    ap.add_argument("--route-tokens", nargs="+", type=int, default=[None], help="default: the config's")
    args = ap.parse_args()

    src = RunLayout(args.run_dir)
    work = RunLayout(args.work or args.run_dir.with_name(args.run_dir.name + "-routing"))
    base = load_run(src.root).cfg.model_dump()
    cfg = ExperimentConfig.model_validate({**base, "eval": {**base["eval"], "methods": METHODS, "method": None}})
    experts, ensembles = forests(src)
    if src.scores_dir.is_dir() and not work.scores_dir.is_dir():
        shutil.copytree(src.scores_dir, work.scores_dir)  # valid cached scores are reused, never rewritten in the run

    def reader(_layout: RunLayout, domain: str, split: str):
        return read_split(src.domain_dir(domain), split)

    summary = []
    for kind in args.routers:
        for r in args.route_tokens:
            routing = {**base["routing"], "router": kind, **({"route_tokens": r} if r else {})}
            c = ExperimentConfig.model_validate({**cfg.model_dump(), "routing": routing})
            t0 = time.perf_counter()
            res = evaluate(c, work, experts, ensembles, reader)
            atomic_write_json(work.results_dir / f"results-{kind}-{c.route_tokens}.json", res)
            seconds = time.perf_counter() - t0
            cost = inference_cost(res["ensembles"], res["methods"], res["domains"])
            print(f"\n== router {kind}, route_tokens {c.route_tokens}, prefix model "
                  f"{next(iter(cost.values()))['routing']['prefix_model']} ({seconds:.1f} s) ==")
            for name in strategy_order(list(cost)):
                ens = cost[name]
                m = ens["methods"]
                ref = m["cached-prior"]
                print(f"\n{name} ({len(ensembles[name].experts)} experts), routing top-1 accuracy on trained domains "
                      f"{accuracy(res, name):.1%}")
                print(f"  {'method':18} {'trained ppl':>12} {'held-out ppl':>13} {'FLOPs/token':>12} {'vs cached-prior':>16}")
                for meth, v in m.items():
                    print(f"  {meth:18} {v['ppl']['trained']:12.2f} {v['ppl'].get('held-out', float('nan')):13.2f} "
                          f"{v['flops']:12.3g} {v['flops'] / ref['flops']:16.3f}")
                r1 = m["routed-top1"]
                ppl_ratio, flops_ratio = r1["ppl"]["trained"] / ref["ppl"]["trained"], r1["flops"] / ref["flops"]
                met = ppl_ratio <= TARGET_PPL and flops_ratio <= TARGET_FLOPS
                perfect = perfect_routing_ppl(res, name, work, c.route_tokens) / ref["ppl"]["trained"]
                print(f"  every window routed to its own domain's expert (same prefix model): trained ppl "
                      f"{perfect - 1:+.2%} vs cached-prior")
                print(f"  target: routed-top1 trained ppl {ppl_ratio - 1:+.2%} vs cached-prior (<= +3%), FLOPs "
                      f"{flops_ratio:.3f}x (<= 0.2x): {'met' if met else 'NOT met'}")
                summary.append({"router": kind, "route_tokens": c.route_tokens, "ensemble": name, "methods": m,
                                "top1_accuracy_trained": accuracy(res, name), "ppl_ratio": ppl_ratio,
                                "flops_ratio": flops_ratio, "target_met": met, "perfect_routing_ppl_ratio": perfect,
                                "seconds": seconds})
    atomic_write_json(work.root / "routing-benchmark.json", summary)
    print(f"\nwrote {work.root / 'routing-benchmark.json'}")


if __name__ == "__main__":
    main()
