"""Router LMs (`bigram`) and soft routing (`routed-soft-top<k>`): the smoothed likelihood by hand,
routing by it, its files, the temperature fitted on held-out train windows, the router's weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from hdee.core.errors import EnsembleError
from hdee.core.layout import RunLayout
from hdee.ensemble import routing, scoring
from hdee.ensemble.experts import read_expert
from hdee.ensemble.router_lm import bigram_loglik, fit_bigram
from hdee.ensemble.routers import TEMPERATURES, fit_temperature, load_router, save_router, tensors_path, top_experts
from hdee.evaluation.evaluate import evaluate
from tests.unit.ensemble.test_routing import ENS, OWN, Reader, config, experts  # noqa: F401 (a fixture)


def test_bigram_likelihood_is_witten_bell_by_hand():
    vocab = 4
    expert = np.array([[0, 1, 0, 1, 2]])  # bigrams 0>1 twice, 1>0, 1>2; unigrams 0:2 1:2 2:1
    shared = np.array([[0, 1, 2, 3, 3, 3]])
    router = fit_bigram([expert], shared, vocab, 3)
    bg = (np.array([1, 1, 1, 3]) + 1) / (6 + 4)
    uni = (np.array([2, 2, 1, 0]) + 3 * bg) / (5 + 3)  # 3 token types seen
    # after 0: successors {1: 2} (1 type, 2 seen); after 1: {0: 1, 2: 1} (2 types, 2 seen); after 3: none
    p_1_after_0 = (2 + 1 * uni[1]) / (2 + 1)
    p_3_after_1 = (0 + 2 * uni[3]) / (2 + 2)
    p_2_after_3 = uni[2]
    want = math.log(uni[0]) + math.log(p_1_after_0) + math.log(p_3_after_1) + math.log(p_2_after_3)
    got = bigram_loglik(router, np.array([[0, 1, 3, 2]]))
    assert got.shape == (1, 1) and got[0, 0] == pytest.approx(want, rel=1e-6)  # the background is stored as float32


def test_bigram_router_sends_each_domain_to_its_expert():
    rng = np.random.default_rng(0)
    # the same tokens in both domains, in different orders: a bag of tokens cannot tell them apart
    up = np.stack([(np.arange(40) + s) % 20 for s in rng.integers(0, 20, size=30)])
    down = np.stack([(-np.arange(40) + s) % 20 for s in rng.integers(0, 20, size=30)])
    router = fit_bigram([up, down], np.concatenate([up, down]), 20, 8)
    held_up = np.stack([(np.arange(8) + s) % 20 for s in range(20)])
    held_down = np.stack([(-np.arange(8) + s) % 20 for s in range(20)])
    assert (top_experts(router.scores(held_up), 1)[:, 0] == 0).all()
    assert (top_experts(router.scores(held_down), 1)[:, 0] == 1).all()


def test_bigram_router_files_round_trip_and_refuse_torn_tables(tmp_path):
    router = fit_bigram([np.array([[1, 2, 3, 1]]), np.array([[3, 2, 1, 0]])], np.array([[0, 1, 2, 3]]), 5, 2)
    router.meta = {"experts": [{"id": "x"}, {"id": "y"}], "temperature": 0.5}
    path = tmp_path / "bigram.json"
    save_router(router, path)
    back = load_router(path)
    assert back.kind == "bigram" and back.temperature == 0.5
    probe = np.array([[1, 2], [3, 2], [4, 4]])
    np.testing.assert_array_equal(back.scores(probe), router.scores(probe))
    from safetensors.numpy import load, save

    tensors = load(tensors_path(path).read_bytes())
    tensors["table.offsets"] = tensors["table.offsets"][:-1]
    torn = tmp_path / "torn.json"
    data = save(tensors)
    tensors_path(torn).write_bytes(data)
    from hdee.core.fsutil import sha256_bytes
    import json

    torn.write_text(json.dumps({**json.loads(path.read_text()), "tensors_sha256": sha256_bytes(data)}))
    with pytest.raises(EnsembleError, match="tables 'keys', 'counts' and 'offsets'") as e:
        load_router(torn)
    assert "\n" not in str(e.value)


def test_the_temperature_is_the_one_that_explains_held_out_labels():
    # two experts, score gap 1: a label share of sigmoid(1 / t) is explained best by temperature t
    for t in (TEMPERATURES[50], TEMPERATURES[60], TEMPERATURES[70]):
        first = round(1000 / (1 + math.exp(-1 / t)))
        scores = [np.tile([1.0, 0.0], (first, 1)), np.tile([1.0, 0.0], (1000 - first, 1))]
        fitted = fit_temperature(scores)
        assert abs(math.log(fitted / t)) <= math.log(TEMPERATURES[1] / TEMPERATURES[0]) + 1e-9
    assert fit_temperature([np.zeros((0, 2)), np.zeros((0, 2))]) == 1.0


def test_soft_mix_is_the_routers_softmax_over_the_chosen_experts():
    rng = np.random.default_rng(3)
    lp = np.log(rng.dirichlet(np.ones(5), size=(3, 4, 6))[..., 0])  # [K=3, n=4, T=6]
    prefix_lp = np.log(rng.uniform(0.1, 1, size=(4, 6)))
    scores = rng.normal(size=(4, 3))
    choice = top_experts(scores, 2)
    log_w = np.take_along_axis(scores, choice, axis=1) / 0.3
    log_w -= logsumexp(log_w, axis=1, keepdims=True)
    out = routing.soft_mix(lp, prefix_lp, choice, log_w, 2)
    for i in range(4):
        w = np.exp(log_w[i])
        want = np.log(w[0] * np.exp(lp[choice[i, 0], i]) + w[1] * np.exp(lp[choice[i, 1], i]))
        np.testing.assert_allclose(out[i, 2:], want[2:], rtol=1e-12)
        np.testing.assert_array_equal(out[i, :2], prefix_lp[i, :2])


@pytest.fixture(scope="module")
def soft_run(tiny, experts, tmp_path_factory):  # noqa: F811 (the imported fixture)
    layout = RunLayout(tmp_path_factory.mktemp("soft"))
    reader = Reader()
    cfg = config(tiny, router="bigram", methods=("prefix-posterior", "routed-top1", "routed-soft-top2", "routed-prev-soft-top2"))
    return cfg, layout, reader, evaluate(cfg, layout, experts, ENS, reader)


def test_a_bigram_router_in_evaluate_routes_by_train_data_and_weighs_by_its_temperature(soft_run, experts):  # noqa: F811
    cfg, layout, reader, res = soft_run
    ens = res["ensembles"]["trio"]
    assert ens["routing"]["router"] == "bigram"
    for eid, dom in OWN.items():
        assert ens["routing"]["top1_share"][dom][eid] == 1.0
    router = load_router(layout.root / ens["routing"]["router_file"])
    assert router.temperature in TEMPERATURES
    # soft top-2 by hand: the router's softmax over its two best, fixed for the window, after the prefix
    r, d = cfg.route_tokens, "py_tests"
    windows = scoring.domain_windows(layout, d, "test", cfg, reader)
    lp = np.stack([np.load(layout.score_path(e, d, "test")) for e in ("a", "b", "c")]).astype(np.float64)
    scores = router.scores(windows[:, :r])
    choice = top_experts(scores, 2)
    w = softmax(np.take_along_axis(scores, choice, axis=1) / router.temperature, axis=1)
    mixed = np.log(sum(w[:, j, None] * np.exp(np.take_along_axis(lp, choice.T[:, :, None], axis=0)[j]) for j in range(2)))
    seed = np.load(layout.score_path("seed-S", d, "test"))
    want = np.concatenate([seed[:, :r], mixed[:, r:]], axis=1)
    assert ens["ppl"]["routed-soft-top2"][d] == pytest.approx(float(np.exp(-want.mean())), rel=1e-9)
    # the temperature came from train windows alone: poisoned test and val splits leave the router as it was
    infos = {e: read_expert(p) for e, p in experts.items()}
    spy = Reader()
    _, path = routing.ensure_router(cfg, layout, ["a", "b", "c"], infos, "seed-S", spy, lambda: None)
    assert {s for _, s in spy.reads} == {"train"} and path.name == ens["routing"]["router_file"].split("/")[-1]


def test_soft_routing_is_scored_only(soft_run):
    _, layout, _, res = soft_run
    path = layout.root / res["ensembles"]["trio"]["routing"]["router_file"]
    with pytest.raises(EnsembleError, match="soft routing is scored only"):
        routing.generate_routed(path, [1, 2, 3], "routed-soft-top2")
