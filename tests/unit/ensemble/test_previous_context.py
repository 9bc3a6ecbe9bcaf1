"""Routing on the text before a window (`routed-prev-top<k>`): contexts never read the scored
window, reset at documents, the cascade's mixture, and FLOPs equal to the sum of what ran."""

from __future__ import annotations

import numpy as np
import pytest

from hdee.data.loaders import eval_windows
from hdee.ensemble import mixing, scoring
from hdee.ensemble.previous_context import cascade_mix, context_loglik, previous_contexts, scores_by_length
from hdee.ensemble.routers import load_router, top_experts
from hdee.evaluation.evaluate import evaluate
from hdee.core.layout import RunLayout
from tests.unit.ensemble.test_routing import ENS, Reader, config, experts  # noqa: F401 (a fixture)

EOS = 0


def test_a_context_is_the_stream_strictly_before_the_window_and_after_the_last_eos():
    rng = np.random.default_rng(0)
    stream = rng.integers(1, 50, size=200)
    stream[[37, 70, 95, 96]] = EOS  # 96 = 3 * 32: window 3 starts with EOS
    windows = eval_windows(stream, 32)
    ctx = previous_contexts(windows, EOS)
    for i in range(len(windows)):
        begin = i * 32  # the stream position of window i's first (given, unscored) token
        before = stream[:begin]
        last_eos = np.flatnonzero(before == EOS)
        start = max(begin - 32, last_eos[-1] + 1 if last_eos.size else 0)
        want = before[start:] if i and stream[begin] != EOS else before[:0]
        assert np.array_equal(ctx.tokens(windows, i), want), i
    assert ctx.length[0] == 0 and ctx.length[3] == 0  # the stream's first window; a window that starts a document
    assert ctx.length[2] == 26 and ctx.length[4] == 31  # after the EOS at 37 (window 1) and at 96 (window 3)


def test_a_capped_context_is_the_last_tokens_of_the_whole_one():
    rng = np.random.default_rng(4)
    stream = rng.integers(1, 50, size=300)
    stream[[40, 150]] = EOS
    windows = eval_windows(stream, 32)
    whole = previous_contexts(windows, EOS)
    for cap in (1, 5, 32):
        capped = previous_contexts(windows, EOS, cap)
        for i in range(len(windows)):
            want = whole.tokens(windows, i)[-cap:] if whole.length[i] else whole.tokens(windows, i)
            assert np.array_equal(capped.tokens(windows, i), want), (cap, i)
        assert capped.length.max() <= cap


def test_the_router_never_reads_the_scored_window(prev_run):
    cfg, layout, reader, res = prev_run
    windows = scoring.domain_windows(layout, "py_tests", "test", cfg, reader)
    router = load_router(layout.root / res["ensembles"]["trio"]["routing"]["router_file"])
    ctx = previous_contexts(windows, -1)
    before = top_experts(scores_by_length(router.scores, windows, ctx, 3), 2)
    changed = windows.copy()
    i = len(windows) // 2
    changed[i, 1:] = np.random.default_rng(1).integers(0, 256, size=windows.shape[1] - 1)  # window i's scored tokens
    after = top_experts(scores_by_length(router.scores, changed, previous_contexts(changed, -1), 3), 2)
    assert np.array_equal(before[: i + 1], after[: i + 1])  # window i routes on window i-1 alone


def test_the_cascade_is_the_prefix_posterior_started_from_the_context():
    rng = np.random.default_rng(2)
    lp = np.log(rng.dirichlet(np.ones(5), size=(3, 4, 6))[..., 0])  # [K=3, n=4, T=6]
    every = np.tile(np.arange(3), (4, 1))
    assert np.allclose(cascade_mix(lp, every, np.zeros((4, 3))), mixing.prefix_posterior(lp))
    one = np.array([[2], [0], [1], [2]])
    assert np.allclose(cascade_mix(lp, one, np.zeros((4, 1))), lp[one[:, 0], np.arange(4)])
    start = rng.normal(size=(4, 3))
    for i in range(4):  # a starting log-likelihood is a prior: the posterior with that prior
        assert np.allclose(cascade_mix(lp, every, start)[i], mixing.prefix_posterior(lp[:, i : i + 1], start[i])[0])


def test_the_context_likelihood_is_the_previous_windows_scores_after_its_last_eos():
    windows = np.array([[5, 6, 7, 8, 9], [9, 1, EOS, 3, 4], [4, 6, 7, 8, 9]])
    ctx = previous_contexts(windows, EOS)
    lp = -np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4) / 10
    ll = context_loglik(lp, ctx, np.array([[0, 1], [1, 0], [1, 0]]))
    assert list(ctx.start) == [0, 0, 3] and list(ctx.length) == [0, 4, 1]
    # window 1's context: window 0's tokens 0..3; predicted 6, 7, 8 = lp[:, 0, 0:3]
    assert ll[1].tolist() == pytest.approx([lp[1, 0, :3].sum(), lp[0, 0, :3].sum()])
    assert ll[2].tolist() == [0.0, 0.0]  # a context of one given token predicts nothing
    assert ll[0].tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def prev_run(tiny, experts, tmp_path_factory):  # noqa: F811 (the imported fixture)
    layout = RunLayout(tmp_path_factory.mktemp("prev"))
    reader = Reader()
    cfg = config(tiny, methods=("prefix-posterior", "routed-top3", "routed-prev-top1", "routed-prev-top2", "routed-prev-top3"))
    return cfg, layout, reader, evaluate(cfg, layout, experts, ENS, reader)


def test_previous_context_routing_in_evaluate_counts_every_flop_it_runs(prev_run):
    cfg, layout, reader, res = prev_run
    ens = res["ensembles"]["trio"]
    flops, d = ens["inference_flops"], "py_tests"
    windows = scoring.domain_windows(layout, d, "test", cfg, reader)
    n, T = len(windows), cfg.data.seq_len
    router = load_router(layout.root / ens["routing"]["router_file"])
    forward = {"a": (25760, 128), "b": (28832, 128), "c": (31904, 128), "seed-S": (25760, 128)}

    def f(e, tokens):  # the hand count of test_routing: 2 x params x n + 128 n^2
        return 2 * forward[e][0] * tokens + forward[e][1] * tokens**2

    ctx = previous_contexts(windows, -1)  # this reader's text has no manifest: no known EOS
    assert ctx.length[0] == 0 and set(ctx.length[1:]) == {T}
    scores = scores_by_length(router.scores, windows, ctx, 3)
    scores[0] = router.scores(windows[:1, : cfg.route_tokens])[0]  # the first window routes on its own prefix
    ids = router.expert_ids
    for k in (1, 2):
        choice = top_experts(scores, k)
        parts = f("seed-S", cfg.route_tokens) + (4 * 8 + 2 * 3 * 8)  # window 0: prefix model and router on R = 8
        parts += (n - 1) * (4 * T + 2 * 3 * T)  # the others: the tf-idf router on the 32-token context, no model
        if k > 1:
            parts += sum(f(ids[j], T) for row in choice[1:] for j in row)  # the cascade's experts on the context
        parts += sum(f(ids[j], T) for row in choice for j in row)  # the chosen experts on the window
        assert flops[f"routed-prev-top{k}"][d] == pytest.approx(parts / n / T, rel=1e-12)
    # with every expert chosen there is nothing to route: routed-top<K>, same cost and same mixture
    assert flops["routed-prev-top3"][d] == flops["routed-top3"][d] == (f("seed-S", 8) + f("a", T) + f("b", T) + f("c", T)) / T
    assert ens["ppl"]["routed-prev-top3"][d] == ens["ppl"]["routed-top3"][d]
    lp = np.stack([np.load(layout.score_path(e, d, "test")) for e in ids])
    one = top_experts(scores, 1)[:, 0]
    rows = np.concatenate([np.load(layout.score_path("seed-S", d, "test"))[0, : cfg.route_tokens],
                           lp[one[0], 0, cfg.route_tokens:]])[None]
    want = np.concatenate([rows, lp[one[1:], np.arange(1, n)]])  # the chosen expert scores the whole window
    assert ens["ppl"]["routed-prev-top1"][d] == pytest.approx(mixing.perplexity(want), rel=1e-9)


def test_generation_routes_on_the_whole_prompt(prev_run):
    from hdee.ensemble import routing

    _, layout, _, res = prev_run
    path = layout.root / res["ensembles"]["trio"]["routing"]["router_file"]
    prompt = [5, 10, 20, 30, 40, 50, 60, 1] + [64 + (7 * i) % 64 for i in range(40)]  # first R = 8: a's; the rest: b's
    assert routing.generate_routed(path, prompt, "routed-top1", max_new_tokens=1, seed=0)[1] == ["a"]
    assert routing.generate_routed(path, prompt, "routed-prev-top1", max_new_tokens=1, seed=0)[1] == ["b"]
