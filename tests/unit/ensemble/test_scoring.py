"""Scoring: true-token log-probs, the on-disk cache and its invalidation, per-domain jobs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers.experts import make_expert, random_windows
from hdee.config import load_config
from hdee.ensemble import scoring
from hdee.ensemble.experts import load_model
from hdee.core.errors import EnsembleError
from hdee.core.fsutil import sha256_file
from hdee.core.layout import RunLayout

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    return make_expert(tmp_path_factory.mktemp("e") / "x", 7, scale=20)


def test_score_expert_equals_full_softmax_of_true_tokens(expert):
    windows = random_windows(5, 6, seed=1)
    got = scoring.score_expert(expert, windows, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (5, 6)
    model = load_model(expert)
    with torch.no_grad():
        for i, w in enumerate(windows):
            p = torch.softmax(model(input_ids=torch.tensor(w[None, :-1])).logits[0].double(), -1)
            want = [np.log(p[t, w[t + 1]].item()) for t in range(6)]
            np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_score_expert_rejects_bad_windows(expert):
    with pytest.raises(EnsembleError, match="windows must be"):
        scoring.score_expert(expert, np.zeros((3,), dtype=np.int64))
    with pytest.raises(EnsembleError, match="outside the expert's vocabulary of 256"):
        scoring.score_expert(expert, np.full((1, 4), 300))
    assert scoring.score_expert(expert, np.zeros((0, 5), dtype=np.int64)).shape == (0, 4)


def _counting_scorer(calls):
    def scorer(path, windows, batch_size):
        calls.append(len(windows))
        return scoring.score_expert(path, windows, batch_size)

    return scorer


def test_cache_is_reused_and_invalidated(expert, tmp_path):
    cache = tmp_path / "scores" / "x" / "d.test.npy"
    windows = random_windows(4, 5, seed=2)
    calls: list[int] = []
    first = scoring.score_cached(expert, windows, cache, scorer=_counting_scorer(calls))
    assert cache.is_file() and scoring.sidecar_path(cache).is_file()
    again = scoring.score_cached(expert, windows, cache, scorer=_counting_scorer(calls))
    assert calls == [4]
    np.testing.assert_array_equal(first, again)

    scoring.score_cached(expert, windows[:3], cache, scorer=_counting_scorer(calls))  # changed windows
    assert calls == [4, 3]

    changed = _retrained_copy(expert, tmp_path / "changed")  # another expert's scores in the same file
    scoring.score_cached(changed, windows[:3], cache, scorer=_counting_scorer(calls))
    assert calls == [4, 3, 3]

    scoring.score_cached(expert, windows[:3], cache, scorer=_counting_scorer(calls))  # key back to original
    assert calls == [4, 3, 3, 3]
    data = bytearray(cache.read_bytes())  # a torn or edited .npy is detected
    data[-1] ^= 0xFF
    cache.write_bytes(bytes(data))
    fixed = scoring.score_cached(expert, windows[:3], cache, scorer=_counting_scorer(calls))
    assert calls == [4, 3, 3, 3, 3]
    np.testing.assert_array_equal(fixed, first[:3])
    assert json.loads(scoring.sidecar_path(cache).read_text())["npy_sha256"] == sha256_file(cache)


def _retrained_copy(expert, dest):
    """A copy of `expert` with other weights and their checksum recorded, as a retrained expert has."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(expert, dest)
    sd = load_file(dest / "model.safetensors")
    sd["model.norm.weight"] = sd["model.norm.weight"] + 1.0
    save_file(sd, dest / "model.safetensors", metadata={"format": "pt"})
    meta = json.loads((dest / "hdee.json").read_text())
    (dest / "hdee.json").write_text(json.dumps({**meta, "sha256": sha256_file(dest / "model.safetensors")}))
    return dest


def test_weights_without_a_recorded_checksum_or_with_another_are_refused(expert, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(expert, copy)
    meta = json.loads((copy / "hdee.json").read_text())
    (copy / "hdee.json").write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(EnsembleError, match="model.safetensors: checksum does not match hdee.json"):
        scoring.score_cached(copy, random_windows(2, 4), tmp_path / "c.npy")
    del meta["sha256"]
    (copy / "hdee.json").write_text(json.dumps(meta))
    with pytest.raises(EnsembleError, match="records no checksum of model.safetensors"):
        scoring.score_cached(copy, random_windows(2, 4), tmp_path / "c.npy")
    assert not (tmp_path / "c.npy").exists()


def test_score_domains_writes_capped_test_and_val_windows(expert, tmp_path):
    cfg = load_config("configs/tiny.toml")
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_tokens": 96, "prior_sequences": 3})})
    seen = []

    def reader(layout, domain, split):
        seen.append((domain, split))
        return np.random.default_rng(len(split)).integers(0, 256, size=500)

    layout = RunLayout(tmp_path / "run")
    scoring.score_domains(layout, "x", expert, ["py_code"], cfg, reader)
    test = np.load(layout.scores_dir / "x" / "py_code.test.npy")
    val = np.load(layout.scores_dir / "x" / "py_code.val.npy")
    assert test.shape == (96 // 32, 32) and val.shape == (3, 32)
    assert sorted(seen) == [("py_code", "test"), ("py_code", "val")]
    tokens = reader(layout, "py_code", "val")
    from hdee.data.loaders import eval_windows

    np.testing.assert_allclose(val, scoring.score_expert(expert, eval_windows(tokens, 32, 96)), atol=1e-6)
