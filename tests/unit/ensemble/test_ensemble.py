"""Ensemble loading checks and numeric parity with single experts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.helpers.experts import make_expert, random_windows
from hdee.registry import MIXING_METHODS
from hdee.ensemble import Ensemble, mixing, scoring
from hdee.core.errors import EnsembleError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("ens")


@pytest.fixture(scope="module")
def expert(root):
    return make_expert(root / "a", 11, scale=20)


def test_tokenizer_mismatch_names_the_odd_expert(root):
    a = make_expert(root / "t1", 1, tokenizer_hash="h1")
    b = make_expert(root / "t2", 2, tokenizer_hash="h2")
    c = make_expert(root / "t3", 3, tokenizer_hash="h1")
    with pytest.raises(EnsembleError) as err:
        Ensemble([a, b, c])
    msg = str(err.value)
    assert "\n" not in msg and str(b) in msg and "tokenizer_hash" in msg and str(a) not in msg


def test_vocab_mismatch_and_missing_dirs(root, expert):
    small = make_expert(root / "v128", 4, vocab=128)
    with pytest.raises(EnsembleError, match="vocab_size"):
        Ensemble([expert, expert, small])
    with pytest.raises(EnsembleError, match="expert directory not found"):
        Ensemble([root / "nope"])
    bare = root / "bare"
    shutil.copytree(expert, bare)
    (bare / "hdee.json").unlink()
    with pytest.raises(EnsembleError, match="no hdee.json"):
        Ensemble([bare])
    with pytest.raises(EnsembleError, match="at least one"):
        Ensemble([])


#: routed-top<k> needs a router and a prefix model (tests/test_routing.py)
UNROUTED = [m for m in MIXING_METHODS.builtin_names() if not MIXING_METHODS.get(m).routed]


@pytest.mark.parametrize("method", UNROUTED)
def test_one_expert_ensemble_equals_the_expert(expert, method):
    windows = random_windows(3, 7, seed=3)
    single = scoring.score_expert(expert, windows)
    ens = Ensemble([expert])
    got = ens.log_probs(windows, method, val_windows=random_windows(2, 7, seed=4))
    np.testing.assert_allclose(got, single, atol=1e-5)
    assert mixing.perplexity(got) == pytest.approx(mixing.perplexity(single), rel=1e-5)


def test_routed_methods_need_a_router(expert):
    with pytest.raises(EnsembleError, match="routed-top1 needs a router"):
        Ensemble([expert]).log_probs(random_windows(1, 7), "routed-top1")


@pytest.mark.parametrize("method", UNROUTED)
def test_identical_experts_equal_the_expert(root, expert, method):
    twin = root / "twin"
    if not twin.exists():
        shutil.copytree(expert, twin)
    windows = random_windows(3, 7, seed=5)
    single = scoring.score_expert(expert, windows)
    got = Ensemble([expert, twin]).log_probs(windows, method, val_windows=random_windows(2, 7, seed=6))
    np.testing.assert_allclose(got, single, atol=1e-5)


def test_mixed_sizes_load_and_score(root):
    dirs = [make_expert(root / "S", 1, intermediate=48), make_expert(root / "L", 2, intermediate=80, layers=3)]
    ens = Ensemble(dirs)
    lp = ens.score(random_windows(2, 5))
    assert lp.shape == (2, 2, 5) and lp.dtype == np.float32
    assert not np.allclose(lp[0], lp[1])
