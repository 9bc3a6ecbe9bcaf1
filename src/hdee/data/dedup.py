"""One-way de-duplication of evaluation data against training data.

The training documents (those that went into the train split of a train or seed domain) form
an index. A val or test document of any domain is dropped when

- `exact`: its text equals a training document's up to case, spacing and punctuation;
- `near`: the Jaccard similarity of its set of word n-grams and a training document's,
  estimated with MinHash (datasketch, LSH), reaches the threshold;
- `contained`: that share of its word n-grams occurs anywhere in the training text (a copy
  inside a longer document, or spread over several, as docstrings are inside source code).

Training documents are never dropped, so adding a held-out domain never changes what experts
train on.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import TYPE_CHECKING, Literal

import numpy as np

from hdee.config import DedupConfig
from hdee.data.documents import Document, dedupe_key

if TYPE_CHECKING:
    from datasketch import LeanMinHash, MinHashLSH

Match = Literal["exact", "near", "contained"]
_WORD = re.compile(r"\w+")
_MULT = np.uint64(0x100000001B3)  # n-gram hash = polynomial in the words' 64-bit hashes, modulo 2**64


@functools.lru_cache(maxsize=1 << 18)
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the lower-cased word n-grams of `text` (all its words if fewer than n)."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    wh = np.fromiter((_word_hash(w) for w in words), dtype=np.uint64, count=len(words))
    n = min(n, len(words))
    span = len(words) - n + 1
    h = np.zeros(span, dtype=np.uint64)
    for k in range(n):
        h = h * _MULT + wh[k : k + span]  # uint64 arrays wrap around
    return np.unique(h)


def _exact_key(text: str) -> bytes:
    return hashlib.blake2b(dedupe_key(text).encode("utf-8"), digest_size=16).digest()


class TrainingIndex:
    """What the training text holds, for `matches` to tell whether an evaluation document copies it."""

    def __init__(self, cfg: DedupConfig):
        from datasketch import MinHashLSH  # imported here: it takes a second, and only a build needs it

        self.cfg = cfg
        self.documents = 0
        self._exact: set[bytes] = set()
        self._lsh = MinHashLSH(threshold=cfg.near, num_perm=cfg.num_perm) if cfg.near else None
        self._sigs: dict[str, LeanMinHash] = {}
        self._parts: list[np.ndarray] = []  # n-gram hashes as added; merged into _grams on first query
        self._grams = np.zeros(0, dtype="<u8")

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.exact or self.cfg.near or self.cfg.contained)

    def _minhashes(self, grams: list[np.ndarray]) -> list[LeanMinHash | None]:
        from datasketch import LeanMinHash, MinHash

        # the n-grams are hashed already: MinHash takes those 64-bit values as they are
        sigs = iter(MinHash.bulk([g for g in grams if len(g)], num_perm=self.cfg.num_perm, scheme="affine64", hashfunc=int))
        return [LeanMinHash(next(sigs)) if len(g) else None for g in grams]

    def add(self, domain: str, docs: list[Document]) -> None:
        """Index training documents of `domain`."""
        self.documents += len(docs)
        if self.cfg.exact:
            self._exact.update(_exact_key(d.text) for d in docs)
        if self._lsh is None and not self.cfg.contained:
            return
        grams = [ngram_hashes(d.text, self.cfg.ngram) for d in docs]
        if self.cfg.contained:
            self._parts += grams
        if self._lsh is not None:
            for doc, mh in zip(docs, self._minhashes(grams)):
                key = f"{domain}\0{doc.id}"
                if mh is not None and key not in self._sigs:
                    self._sigs[key] = mh
                    self._lsh.insert(key, mh)

    def _contained_share(self, grams: np.ndarray) -> float:
        if self._parts:
            self._grams = np.unique(np.concatenate([self._grams, *self._parts]))
            self._parts = []
        if not len(self._grams):
            return 0.0
        at = np.minimum(np.searchsorted(self._grams, grams), len(self._grams) - 1)
        return float(np.mean(self._grams[at] == grams))

    def _near(self, lsh: MinHashLSH, mh: LeanMinHash) -> bool:
        # LSH candidates are only likely matches: confirm each with the estimated similarity
        return any(mh.jaccard(self._sigs[k]) >= self.cfg.near for k in lsh.query(mh))

    def matches(self, docs: list[Document]) -> list[Match | None]:
        """For each document: how it duplicates training text (the first test that fires), or None."""
        out: list[Match | None] = [None] * len(docs)
        if self.cfg.exact:
            out = ["exact" if _exact_key(d.text) in self._exact else None for d in docs]
        todo = [i for i, m in enumerate(out) if m is None]
        grams = [ngram_hashes(docs[i].text, self.cfg.ngram) for i in todo]
        if self._lsh is not None and self._sigs:
            for i, mh in zip(todo, self._minhashes(grams)):
                if mh is not None and self._near(self._lsh, mh):
                    out[i] = "near"
        if self.cfg.contained:
            for i, g in zip(todo, grams):
                if out[i] is None and len(g) and self._contained_share(g) >= self.cfg.contained:
                    out[i] = "contained"
        return out
