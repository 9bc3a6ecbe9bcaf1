"""Which document each scored token belongs to, so intervals resample documents, not windows.

A split's shard is its documents' tokens, each followed by EOS (`hdee.data.shards`), and the
evaluation windows (`hdee.data.loaders.eval_windows`) cut that stream into consecutive pieces
that overlap by one token. A window of a long document and its neighbour share the document's
style and topic, so windows are not independent draws; documents are (up to the split rule,
which keeps every piece of a document in one split). The scored target at stream position p
belongs to the document counted by the EOS tokens before p: an EOS closes its own document.
"""

from __future__ import annotations

import numpy as np


def target_documents(windows: np.ndarray, eos_id: int) -> np.ndarray:
    """int64 [n, seq_len]: the document index (0-based, in stream order) of every scored target."""
    w = np.asarray(windows)
    n, width = w.shape
    if n == 0:
        return np.zeros((0, width - 1), dtype=np.int64)
    stream = np.concatenate([w[0], w[1:, 1:].reshape(-1)])  # consecutive windows share one token
    before = np.concatenate([[0], np.cumsum(stream == eos_id)[:-1]])  # EOS tokens strictly before each position
    return before[1:].reshape(n, width - 1).astype(np.int64)


def document_sums(token_lp: np.ndarray, docs: np.ndarray) -> tuple[list[float], list[int]]:
    """Per document: the summed negative log-prob of its scored tokens and how many there are.

    Documents are renumbered from 0 in order (the first window may start inside one)."""
    ids = np.asarray(docs).reshape(-1)
    if ids.size == 0:
        return [], []
    ids = ids - ids.min()
    nll = np.bincount(ids, weights=-np.asarray(token_lp, dtype=np.float64).reshape(-1))
    count = np.bincount(ids)
    keep = count > 0
    return nll[keep].tolist(), count[keep].astype(int).tolist()
