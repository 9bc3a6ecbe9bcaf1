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
