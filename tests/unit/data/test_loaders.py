import json

import numpy as np
import pytest

from hdee.data.loaders import TrainSampler, eval_windows

SEQ = 8


def sources():
    return [np.arange(0, 200, dtype=np.uint16), np.arange(1000, 1500, dtype=np.uint32)]


def test_windows_are_contiguous_slices_of_their_source():
    s = TrainSampler(sources(), SEQ, seed=0, weights=[1, 3], names=["a", "b"])
    batch = s.next_batch(40)
    assert batch.shape == (40, SEQ + 1) and batch.dtype == np.int64
    assert np.all(np.diff(batch, axis=1) == 1)  # consecutive token ids = a real slice
    from_a = int(np.sum(batch[:, 0] < 1000))
    assert from_a == 10  # exact 1:3 mixture, no sampling noise


def test_same_seed_same_windows_other_seed_other_order():
    a = TrainSampler(sources(), SEQ, seed=5).next_batch(30)
    b = TrainSampler(sources(), SEQ, seed=5).next_batch(30)
    c = TrainSampler(sources(), SEQ, seed=6).next_batch(30)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_an_epoch_visits_each_window_start_once_then_repeats():
    tokens = np.arange(100, dtype=np.uint16)
    s = TrainSampler([tokens], SEQ, seed=1, names=["only"])
    n = len(s._epoch_starts(0))
    first = s.next_batch(n)[:, 0]
    assert len(set(first.tolist())) == n  # no window repeats inside an epoch
    assert np.all(np.diff(np.sort(first)) == SEQ)  # non-overlapping starts
    assert s.epochs["only"] == pytest.approx(1.0)
    s.next_batch(n + 1)
    assert s.epoch[0] == 2 and 2.0 < s.epochs["only"] < 3.0


def test_resume_mid_epoch_gives_the_same_following_batches():
    ref = TrainSampler(sources(), SEQ, seed=3, weights=[2, 1])
    expected = [ref.next_batch(7) for _ in range(12)]  # crosses epoch boundaries of both sources
    run = TrainSampler(sources(), SEQ, seed=3, weights=[2, 1])
    got = [run.next_batch(7) for _ in range(5)]
    cursor = json.loads(json.dumps(run.state_dict()))  # survives a JSON round trip
    resumed = TrainSampler(sources(), SEQ, seed=3, weights=[2, 1])
    resumed.load_state_dict(cursor)
    got += [resumed.next_batch(7) for _ in range(7)]
    for e, g in zip(expected, got):
        assert np.array_equal(e, g)
    assert resumed.epochs == ref.epochs


def test_bad_inputs():
    with pytest.raises(ValueError):
        TrainSampler([], SEQ, seed=0)
    with pytest.raises(ValueError):
        TrainSampler(sources(), SEQ, seed=0, weights=[1])
    with pytest.raises(ValueError, match="fewer than two windows"):
        TrainSampler([np.arange(10)], SEQ, seed=0)
    s = TrainSampler(sources(), SEQ, seed=0)
    with pytest.raises(ValueError):
        TrainSampler(sources(), SEQ, seed=1).load_state_dict(s.state_dict())


def test_eval_windows_predict_every_token_once():
    w = eval_windows(np.arange(50), seq_len=8)
    assert w.shape == (6, 9)
    targets = w[:, 1:].reshape(-1)
    assert np.array_equal(targets, np.arange(1, 49))
    assert eval_windows(np.arange(50), 8, max_tokens=16).shape == (2, 9)
