"""The routing front: every router kind x route tokens x routed method, the same numbers a run with
that router alone gives, choices made on validation only, the config's checks, the report's section."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest

from hdee.config import ExperimentConfig
from hdee.core.layout import RunLayout
from hdee.evaluation.evaluate import evaluate
from hdee.evaluation.routing_front import FLOPS_SHARE, TOP1_FLOPS_SHARE, summarise
from hdee.report.routing_front_md import draw_front, front_section
from tests.unit.ensemble.test_routing import ENS, Reader, config, experts  # noqa: F401 (a fixture)

matplotlib.use("Agg")

FRONT = {"routers": ["tfidf", "bigram"], "route_tokens": [4, 8], "context_tokens": [3, 32],  # 32: the whole window
         "methods": ["routed-top1", "routed-top2", "routed-prev-top1", "routed-soft-top2"]}
PREV = {"routed-prev-top1"}


def with_front(cfg: ExperimentConfig, **front) -> ExperimentConfig:
    raw = cfg.model_dump()
    return ExperimentConfig.model_validate({**raw, "routing": {**raw["routing"], "front": {**FRONT, **front}}})


@pytest.fixture(scope="module")
def front_run(tiny, experts, tmp_path_factory):  # noqa: F811 (the imported fixture)
    layout = RunLayout(tmp_path_factory.mktemp("front"))
    cfg = with_front(config(tiny, methods=("prefix-posterior", "cached-prior", "routed-top1")))
    return cfg, layout, evaluate(cfg, layout, experts, ENS, Reader())


def test_the_front_has_every_point_and_each_equals_a_run_with_that_router(front_run, tiny, experts, tmp_path):  # noqa: F811
    cfg, _, res = front_run
    front = res["routing_front"]["final"]["trio"]
    got = {(p["router"], p["route_tokens"], p["context_tokens"], p["method"]) for p in front["per_domain"]}
    assert got == {(r, t, c if m in PREV else None, m) for r in FRONT["routers"] for t in FRONT["route_tokens"]
                   for c in FRONT["context_tokens"] for m in FRONT["methods"]}  # a prefix method once per R
    assert len(front["points"]) == len(got) == 2 * 2 * (3 + 2)
    alone = config(tiny, router="bigram", methods=("prefix-posterior", "routed-top1", "routed-soft-top2", "routed-prev-top1"))
    raw = alone.model_dump()
    alone = ExperimentConfig.model_validate({**raw, "routing": {**raw["routing"], "route_tokens": 4, "context_tokens": 3}})
    single = evaluate(alone, RunLayout(tmp_path), experts, ENS, Reader())["ensembles"]["trio"]
    for m, c in (("routed-top1", None), ("routed-soft-top2", None), ("routed-prev-top1", 3)):
        point = next(p for p in front["per_domain"]
                     if (p["router"], p["route_tokens"], p["context_tokens"], p["method"]) == ("bigram", 4, c, m))
        assert point["test"] == pytest.approx(single["ppl"][m], rel=1e-12)
        assert point["flops"] == pytest.approx(single["inference_flops"][m], rel=1e-12)
    short, whole = (next(p for p in front["per_domain"] if (p["router"], p["route_tokens"], p["context_tokens"], p["method"])
                         == ("bigram", 4, c, "routed-prev-top1")) for c in (3, 32))
    assert short["flops"] != whole["flops"]  # the router reads fewer tokens
    # the reference is the ensemble's own all-expert method
    ens = res["ensembles"]["trio"]
    trained = cfg.train_domains
    ref = sum(math.log(ens["ppl"]["cached-prior"][d]) for d in trained) / len(trained)
    assert front["reference"]["test_mean_log_ppl"] == pytest.approx(ref, rel=1e-12)


def test_the_recommended_points_are_chosen_on_validation_within_their_flops(front_run):
    cfg, _, res = front_run
    front = res["routing_front"]["final"]["trio"]
    rows = front["points"]
    for key, share, k1 in (("recommended", FLOPS_SHARE, False), ("top1", TOP1_FLOPS_SHARE, True)):
        pool = [r for r in rows if r["flops_share"] <= share and (r["k"] == 1 or not k1)]
        chosen = front[key]
        if not pool:
            assert chosen is None
            continue
        best = min(pool, key=lambda r: r["val_mean_log_ppl"])
        assert (chosen["router"], chosen["route_tokens"], chosen["method"]) == (best["router"], best["route_tokens"], best["method"])
        assert chosen["target_met"] == (chosen["test_ratio"] <= chosen["ppl_limit"])
    assert front["recommended"] is not None  # three experts, top-1 routing costs well under a third


def test_test_numbers_never_move_the_choice(front_run):
    cfg, _, res = front_run
    front = res["routing_front"]["final"]["trio"]
    points = [dict(p) for p in front["per_domain"]]
    ens = res["ensembles"]["trio"]
    reference = {"test": ens["ppl"]["cached-prior"], "val": ens["val_ppl"]["cached-prior"],
                 "flops": ens["inference_flops"]["cached-prior"]}
    base = summarise(points, reference, cfg.train_domains, "cached-prior")["recommended"]
    flipped = [{**p, "test": {d: v * (3.0 if p["method"] == base["method"] else 0.5) for d, v in p["test"].items()}}
               for p in points]
    again = summarise(flipped, reference, cfg.train_domains, "cached-prior")["recommended"]
    assert (again["method"], again["router"], again["route_tokens"]) == (base["method"], base["router"], base["route_tokens"])
    assert again["test_ratio"] == pytest.approx(base["test_ratio"] * 3.0)
    worse = [{**p, "val": {d: v * (3.0 if (p["method"], p["router"], p["route_tokens"]) ==
                                (base["method"], base["router"], base["route_tokens"]) else 1.0) for d, v in p["val"].items()}}
             for p in points]
    moved = summarise(worse, reference, cfg.train_domains, "cached-prior")["recommended"]
    assert (moved["method"], moved["router"], moved["route_tokens"]) != (base["method"], base["router"], base["route_tokens"])


@pytest.mark.parametrize("front, message", [
    ({"routers": ["magic"]}, "unknown router kind 'magic'"),
    ({"methods": ["uniform"]}, "'uniform' is not a routed method"),
    ({"route_tokens": [32]}, "routing.front.route_tokens must be below data.seq_len 32"),
    ({"context_tokens": [33]}, "routing context_tokens must be at most data.seq_len 32"),
    ({"context_tokens": [0]}, "routing.front.context_tokens must be positive"),
    ({"strategies": ["nobody"]}, "routing.front.strategies names 'nobody'"),
    ({"reference": "uniform"}, "routing.front.reference 'uniform' is not in eval.methods"),
    ({"reference": "product"}, "routing.front.reference 'product' must mix cached scores"),
])
def test_front_settings_are_checked(tiny, front, message):
    with pytest.raises(ValueError, match=message):
        with_front(config(tiny, methods=("prefix-posterior", "cached-prior", "product")), **front)


def test_the_report_shows_the_choices_and_draws_the_front(front_run):
    import matplotlib.pyplot as plt

    _, _, res = front_run
    summaries = {"final": {"trio": {k: v for k, v in res["routing_front"]["final"]["trio"].items() if k != "per_domain"}}}
    lines = front_section({"routing_front": summaries, "inference": {"final": {}}})
    text = "\n".join(lines)
    chosen = summaries["final"]["trio"]["recommended"]
    assert "## Routing front" in text and f"`{chosen['method']}` ({chosen['router']}, " in text
    assert sum(1 for line in lines if line.startswith("| tfidf |") or line.startswith("| bigram |")) == 20
    fig, ax = plt.subplots()
    draw_front(ax, "final", "trio", summaries["final"]["trio"])
    assert len(ax.collections) >= 20  # a dot per point, a star per choice
    plt.close(fig)
    assert front_section({}) == []
    assert np.isfinite(chosen["flops_share"])


def test_the_front_of_the_tiny_runs_forests(tiny_run, tmp_path):
    """On experts the real trainer made: each forest gets its front, and one-expert routing on the
    text before a window costs what one expert does plus the router."""
    from hdee.ensemble.experts import read_expert
    from hdee.ensemble.inference_flops import window_flops
    from hdee.run import ensemble_specs, expert_dirs, load_run

    layout = tiny_run.copy(tmp_path / "run")
    run = load_run(layout.root)
    cfg = with_front(run.cfg, routers=["tfidf", "bigram"], route_tokens=[], methods=["routed-prev-top1", "routed-top2"])
    forests = ensemble_specs(run.plan, layout, "all")
    res = evaluate(cfg, layout, expert_dirs(run.plan, layout), ensemble_specs(run.plan, layout, "final"), alt=forests)
    front = res["routing_front"]["all"]
    assert sorted(front) == sorted(n for n, s in forests.items() if len(s.experts) > 1)
    for name, summary in front.items():
        assert {(p["router"], p["route_tokens"]) for p in summary["points"]} == {("tfidf", cfg.route_tokens), ("bigram", cfg.route_tokens)}
        ens = res["alt"]["ensembles"][name]
        one = [p for p in summary["per_domain"] if p["method"] == "routed-prev-top1"]
        seq = run.cfg.data.seq_len
        smallest = min(window_flops(read_expert(layout.expert_dir(e)), seq) for e in ens["experts"]) / seq
        for p in one:  # at least the smallest expert's forward, at most half of running them all
            assert all(smallest <= f < ens["inference_flops"]["uniform"][d] / 2 for d, f in p["flops"].items())
        assert all(np.isfinite(r["test_ratio"]) and r["test_ratio"] > 0.5 for r in summary["points"])
