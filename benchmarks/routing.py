"""The routing front of a finished run, both ensemble kinds, without touching the run.

Takes a finished run (default `runs/regime`) and evaluates, for each strategy's final-expert
ensemble and forest, every router kind x route tokens x routed method against the all-expert
`cached-prior` (`hdee.evaluation.routing_front`): perplexity on the trained domains, inference
FLOPs per token, and the two routed methods chosen on validation windows with the targets' status
(within +3% at <= 1/3 of the FLOPs; one expert within +8% at <= 0.15x). It only reads the run:
its shards and cached scores are copied, and routers and results are written under --work.

    .venv/bin/python benchmarks/routing.py ~/hdee-runs/regime --work /tmp/routing-front --context-tokens 16 32 64 128
    .venv/bin/python benchmarks/routing.py runs/tiny --route-tokens 4 8 --strategies MHo-IHo
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from hdee.config import ExperimentConfig
from hdee.config.eval_execute import FRONT_METHODS
from hdee.core.fsutil import atomic_write_json
from hdee.core.layout import RunLayout
from hdee.data.shards import eos_of
from hdee.evaluation.evaluate import evaluate
from hdee.report.compare import strategy_order
from hdee.run import ensemble_specs, expert_dirs, load_run


def _pct(x: float | None) -> str:
    return "   -   " if x is None else f"{x - 1:+7.2%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", default="runs/regime", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where scores, routers and results go (default RUN_DIR-routing)")
    ap.add_argument("--routers", nargs="+", default=["tfidf", "hidden", "bigram"])
    ap.add_argument("--route-tokens", nargs="+", type=int, default=[], help="default: the config's")
    ap.add_argument("--context-tokens", nargs="+", type=int, default=[],
                    help="previous-context lengths (seq_len: the whole previous window; default: the config's)")
    ap.add_argument("--methods", nargs="+", default=FRONT_METHODS)
    ap.add_argument("--strategies", nargs="+", default=None, help="default: every strategy of more than one expert")
    args = ap.parse_args()

    src = RunLayout(args.run_dir)
    work = RunLayout(args.work or args.run_dir.with_name(args.run_dir.name + "-routing"))
    run = load_run(src.root)
    base = run.cfg.model_dump()
    front = {"routers": args.routers, "route_tokens": args.route_tokens, "context_tokens": args.context_tokens, "methods": args.methods,
             "strategies": args.strategies, "reference": "cached-prior"}
    cfg = ExperimentConfig.model_validate({
        **base, "eval": {**base["eval"], "methods": ["prefix-posterior", "cached-prior", "routed-top1"], "method": None},
        "routing": {**base["routing"], "front": front}})
    experts = expert_dirs(run.plan, src)
    final, forest = (ensemble_specs(run.plan, src, kind) for kind in ("final", "all"))
    if src.scores_dir.is_dir() and not work.scores_dir.is_dir():
        shutil.copytree(src.scores_dir, work.scores_dir)  # valid cached scores are reused, never rewritten in the run
    # the shards and their manifests too: evaluation finds each domain's EOS there, where previous-context
    # routing starts its context (without it, contexts would run across documents) and documents end
    if not (work.root / "data").is_dir():
        shutil.copytree(src.root / "data", work.root / "data")
    missing = [d.name for d in run.cfg.domains if eos_of(work.domain_dir(d.name)) is None]
    if missing:
        raise SystemExit(f"{work.root / 'data'}: no EOS for {', '.join(missing)}: copy {src.root / 'data'} there")

    t0 = time.perf_counter()
    res = evaluate(cfg, work, experts, final, alt=forest, results_path=work.results_dir / "front.json")
    seconds = time.perf_counter() - t0
    print(f"evaluated in {seconds:.1f} s; every ratio is against cached-prior on the trained domains (geometric mean)")
    for kind, per in res["routing_front"].items():
        for name in strategy_order(list(per)):
            s = per[name]
            print(f"\n== {name}, {kind} ensemble ({len((final if kind == 'final' else forest)[name].experts)} experts) ==")
            for label, c in (("chosen on val, <= 1/3 FLOPs", s["recommended"]), ("chosen on val, one expert, <= 0.15x", s["top1"])):
                if c is None:
                    print(f"  {label}: no point within the FLOPs limit")
                    continue
                print(f"  {label}: {c['method']} ({c['router']}, R={c['route_tokens']}, C={c['context_tokens']}): val {_pct(c['val_ratio'])}, "
                      f"test {_pct(c['test_ratio'])}, FLOPs {c['flops_share']:.3f}x -> target {'met' if c['target_met'] else 'NOT met'}")
            if args.strategies or name == strategy_order(list(per))[0]:
                print(f"  {'router':7} {'R':>3} {'C':>4} {'method':22} {'temp':>7} {'FLOPs':>7} {'val':>8} {'test':>8}")
                for p in sorted(s["points"], key=lambda p: p["flops_share"]):
                    print(f"  {p['router']:7} {p['route_tokens']:3d} {str(p['context_tokens'] or '-'):>4} {p['method']:22} {p['temperature'] or 0:7.3g} "
                          f"{p['flops_share']:7.3f} {_pct(p['val_ratio'])} {_pct(p['test_ratio'])}")
    atomic_write_json(work.root / "routing-front.json", {"seconds": seconds, "front": res["routing_front"]})
    print(f"\nwrote {work.root / 'routing-front.json'}")


if __name__ == "__main__":
    main()
