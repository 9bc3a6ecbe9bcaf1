"""Windows of tokens for training (seeded, shuffled, resumable) and evaluation (fixed, exact)."""

from __future__ import annotations

import numpy as np


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int | None = None) -> np.ndarray:
    """Fixed evaluation windows of `seq_len + 1` tokens, in order, without padding.

    Window i covers tokens[i*seq_len : i*seq_len + seq_len + 1]; consecutive windows share one
    boundary token, so every token after the first is predicted exactly once. `max_tokens` caps
    the number of predicted tokens (rounded down to whole windows). Returns int64 [n, seq_len + 1].
    """
    n = (len(tokens) - 1) // seq_len
    if max_tokens is not None:
        n = min(n, max_tokens // seq_len)
    if n <= 0:
        return np.zeros((0, seq_len + 1), dtype=np.int64)
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return np.asarray(tokens[: n * seq_len + 1], dtype=np.int64)[idx]


class TrainSampler:
    """Seeded, shuffled training windows of `seq_len + 1` tokens from a weighted mix of token arrays.

    Sources are interleaved deterministically so that after k windows each source has supplied
    as close to weight_i * k windows as possible (no sampling noise in the mixture). Within a
    source, an epoch is a seeded permutation of its non-overlapping window starts, shifted by a
    random offset in [0, seq_len) drawn per epoch; a source smaller than the budget simply starts
    a new epoch, and `epochs` counts them. The whole position is a small JSON-able cursor, so a
    run resumed from `state_dict()` draws exactly the windows an uninterrupted run would.
    """

    def __init__(
        self,
        sources: list[np.ndarray],
        seq_len: int,
        seed: int,
        weights: list[float] | None = None,
        names: list[str] | None = None,
    ):
        if not sources:
            raise ValueError("TrainSampler needs at least one token array")
        weights = list(weights) if weights is not None else [1.0] * len(sources)
        if len(weights) != len(sources) or any(w <= 0 for w in weights):
            raise ValueError("TrainSampler needs one positive weight per source")
        self.names = list(names) if names is not None else [str(i) for i in range(len(sources))]
        for name, tokens in zip(self.names, sources):
            if len(tokens) < 2 * seq_len + 1:
                raise ValueError(f"source {name!r} has {len(tokens)} tokens, fewer than two windows of {seq_len + 1}")
        total = float(sum(weights))
        self.sources = sources
        self.weights = [w / total for w in weights]
        self.seq_len = seq_len
        self.seed = seed
        self.drawn = [0] * len(sources)  # windows taken from each source so far
        self.epoch = [0] * len(sources)  # current epoch per source
        self.pos = [0] * len(sources)  # position inside the current epoch's permutation
        self._starts: list[np.ndarray | None] = [None] * len(sources)

    # -- the order
    def _epoch_starts(self, i: int) -> np.ndarray:
        if self._starts[i] is None:
            rng = np.random.default_rng([self.seed, i, self.epoch[i]])
            offset = int(rng.integers(0, self.seq_len))
            n = (len(self.sources[i]) - 1 - offset) // self.seq_len
            self._starts[i] = offset + rng.permutation(n).astype(np.int64) * self.seq_len
        return self._starts[i]

    def _pick_source(self) -> int:
        k = sum(self.drawn) + 1
        deficits = [w * k - d for w, d in zip(self.weights, self.drawn)]
        return int(np.argmax(deficits))

    def _next_window(self) -> np.ndarray:
        i = self._pick_source()
        starts = self._epoch_starts(i)
        if self.pos[i] >= len(starts):
            self.epoch[i] += 1
            self.pos[i] = 0
            self._starts[i] = None
            starts = self._epoch_starts(i)
        s = int(starts[self.pos[i]])
        self.pos[i] += 1
        self.drawn[i] += 1
        return np.asarray(self.sources[i][s : s + self.seq_len + 1], dtype=np.int64)

    def next_batch(self, n: int) -> np.ndarray:
        """The next `n` windows as int64 [n, seq_len + 1]."""
        return np.stack([self._next_window() for _ in range(n)])

    @property
    def epochs(self) -> dict[str, float]:
        """Passes over each source so far (fractional: 1.5 = one full epoch and half of the next)."""
        out = {}
        for i, name in enumerate(self.names):
            n = len(self._epoch_starts(i))
            out[name] = self.epoch[i] + self.pos[i] / max(n, 1)
        return out

    # -- the cursor
    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "seq_len": self.seq_len,
            "names": list(self.names),
            "drawn": list(self.drawn),
            "epoch": list(self.epoch),
            "pos": list(self.pos),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["seq_len"] != self.seq_len or state["names"] != self.names:
            raise ValueError("sampler state was saved for different sources, seed or seq_len")
        self.drawn = [int(x) for x in state["drawn"]]
        self.epoch = [int(x) for x in state["epoch"]]
        self.pos = [int(x) for x in state["pos"]]
        self._starts = [None] * len(self.sources)
