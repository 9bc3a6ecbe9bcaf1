"""Mixing methods: parity with a naive full-vocabulary implementation built from the models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers.experts import make_expert, random_windows
from hdee.ensemble import Ensemble
from hdee.ensemble import mixing
from hdee.core.errors import EnsembleError
from hdee.registry import MIXING_METHODS

torch.set_num_threads(1)

SEQ = 8
TOP_K = 2
CACHED = [name for name in MIXING_METHODS.builtin_names() if MIXING_METHODS.get(name).cached]
ALPHA = 0.3


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    root = tmp_path_factory.mktemp("trio")
    dirs = [
        make_expert(root / "s", 1, intermediate=48, scale=25, size="S"),
        make_expert(root / "m", 2, intermediate=64, scale=25, size="M"),
        make_expert(root / "l", 3, intermediate=80, scale=25, size="L"),
    ]
    return Ensemble(dirs)


def _full_probs(models, window):
    """[K, T, V] explicit next-token distributions (float64) of every model at every position."""
    x = torch.tensor(window[None, :-1])
    with torch.no_grad():
        return np.stack([torch.softmax(m(input_ids=x).logits[0].double(), -1).numpy() for m in models])


def _naive_prior(models, val_windows, alpha):
    num, den = 0.0, 0.0
    for w in val_windows:
        p = _full_probs(models, w)
        loglik = np.array([sum(math.log(p[k, t, w[t + 1]]) for t in range(SEQ)) for k in range(len(models))])
        q = np.exp(loglik - loglik.max())
        q /= q.sum()
        num = (1 - alpha) * num + q
        den = (1 - alpha) * den + 1
    return num / den


def naive(models, windows, method, val_windows=None):
    """Token by token: build the mixture's whole distribution over the vocabulary, read the true token."""
    k = len(models)
    prior = _naive_prior(models, val_windows, ALPHA) if method.startswith("cached-prior") else np.full(k, 1 / k)
    full = [_full_probs(models, w) for w in windows]
    if method == "best-expert":
        totals = [sum(math.log(p[j, t, w[t + 1]]) for p, w in zip(full, windows) for t in range(SEQ)) for j in range(k)]
        best = int(np.argmax(totals))
    out = np.zeros((len(windows), SEQ))
    for i, (p, w) in enumerate(zip(full, windows)):
        for t in range(SEQ):
            if method == "uniform":
                weights = np.full(k, 1 / k)
            elif method in ("prefix-posterior", "cached-prior", "top-k"):
                weights = prior * np.array([np.prod([p[j, s, w[s + 1]] for s in range(t)]) for j in range(k)])
            elif method in ("prevtoken-posterior", "cached-prior-prevtoken"):
                weights = prior * (p[:, t - 1, w[t]] if t > 0 else 1.0)
            elif method == "best-expert":
                weights = np.eye(k)[best]
            if method == "product":
                g = np.exp(np.log(p[:, t]).mean(0))
                dist = g / g.sum()
            else:
                weights = weights / weights.sum()
                if method == "top-k":
                    keep = sorted(range(k), key=lambda j: -weights[j])[:TOP_K]
                    weights = np.array([weights[j] if j in keep else 0.0 for j in range(k)])
                    weights = weights / weights.sum()
                dist = (weights[:, None] * p[:, t]).sum(0)
            assert abs(dist.sum() - 1) < 1e-9
            out[i, t] = math.log(dist[w[t + 1]])
    return out


@pytest.mark.parametrize("method", ["uniform", "prefix-posterior", "prevtoken-posterior", "cached-prior",
                                    "cached-prior-prevtoken", "top-k", "best-expert", "product"])
def test_every_method_matches_naive_full_vocab_mixture(trio, method):
    windows = random_windows(3, SEQ, seed=5)
    val = random_windows(4, SEQ, seed=6)
    fast = trio.log_probs(windows, method, val_windows=val, top_k=TOP_K, prior_alpha=ALPHA)
    slow = naive(trio.models, windows, method, val)
    assert fast.shape == (3, SEQ)
    np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=0)


def test_methods_really_differ_on_these_experts(trio):
    """Guards the parity test: with near-identical experts every method would agree trivially."""
    windows = random_windows(3, SEQ, seed=5)
    val = random_windows(4, SEQ, seed=6)
    ppl = {m: mixing.perplexity(trio.log_probs(windows, m, val_windows=val)) for m in
           ["uniform", "prefix-posterior", "prevtoken-posterior", "top-k", "product"]}
    assert len({round(v, 6) for v in ppl.values()}) == len(ppl)


def _lp(k=3, n=4, t=6, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, n, t, 16)) * 2
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return logp[..., 0]


def test_uniform_is_arithmetic_not_geometric():
    lp = np.log(np.array([0.9, 0.1]))[:, None, None]
    assert mixing.uniform(lp)[0, 0] == pytest.approx(math.log(0.5))
    assert mixing.uniform(lp)[0, 0] != pytest.approx(lp.mean())


def test_one_expert_every_cached_method_is_the_expert():
    lp = _lp(k=1)
    for m in CACHED:
        np.testing.assert_allclose(mixing.mix_cached(m, lp, _lp(k=1, seed=1), top_k_experts=2), lp[0], atol=1e-12)


def test_identical_experts_give_the_expert_under_every_method():
    one = _lp(k=1)
    lp = np.concatenate([one, one, one])
    for m in CACHED:
        np.testing.assert_allclose(mixing.mix_cached(m, lp, _lp(k=3, seed=1)), one[0], atol=1e-12)


def test_prefix_weights_are_uniform_at_first_position_and_sharpen():
    lp = _lp()
    w = np.exp(mixing.prefix_log_weights(lp))
    np.testing.assert_allclose(w[:, :, 0], 1 / 3)
    np.testing.assert_allclose(w.sum(0), 1.0)
    assert (w[:, :, -1].max(0) > w[:, :, 0].max(0)).all()


def test_top_k_with_all_experts_equals_prefix_posterior_and_top_1_picks_leader():
    lp = _lp()
    np.testing.assert_allclose(mixing.top_k(lp, 3), mixing.prefix_posterior(lp))
    leader = np.argmax(mixing.prefix_log_weights(lp), axis=0)
    np.testing.assert_allclose(mixing.top_k(lp, 1), np.take_along_axis(lp, leader[None], 0)[0])


def test_estimate_prior_ema():
    # window 0 favours expert 0, windows 1-2 favour expert 1 strongly
    val = np.zeros((2, 3, 1))
    val[0, 0, 0], val[1, 1:, 0] = 0.0, 0.0
    val[1, 0, 0] = -50.0
    val[0, 1:, 0] = -50.0
    prior = np.exp(mixing.estimate_prior(val, 0.5))
    # adjusted EMA weights (0.25, 0.5, 1) over one-hot posteriors
    np.testing.assert_allclose(prior, [0.25 / 1.75, 1.5 / 1.75], atol=1e-12)
    np.testing.assert_allclose(np.exp(mixing.estimate_prior(val, 1.0)), [0, 1], atol=1e-12)
    np.testing.assert_allclose(np.exp(mixing.estimate_prior(np.zeros((4, 0, 5)), 0.3)), 0.25)


def test_cached_prior_shifts_weight_towards_the_prior():
    lp = _lp()
    prior = np.log(np.array([0.98, 0.01, 0.01]))
    w = np.exp(mixing.prefix_log_weights(lp, prior))
    np.testing.assert_allclose(w[:, :, 0], np.exp(prior)[:, None].repeat(4, 1))


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(EnsembleError, match="K >= 1"):
        mixing.uniform(np.zeros((4, 5)))
    with pytest.raises(EnsembleError, match="2 weights for 3 experts"):
        mixing.prefix_posterior(_lp(), np.zeros(2))
    with pytest.raises(EnsembleError, match="validation scores"):
        mixing.mix_cached("cached-prior", _lp())
    with pytest.raises(EnsembleError, match="unknown"):
        mixing.mix_cached("product", _lp())
