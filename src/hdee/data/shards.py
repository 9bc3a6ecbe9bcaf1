"""Token shards: flat little-endian uint16/uint32 token ids per domain and split, plus a manifest.

    <domain_dir>/train.bin, val.bin, test.bin   documents' token ids, each followed by EOS
    <domain_dir>/manifest.json                  DomainManifest
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from hdee.core.errors import DataError, HdeeError
from hdee.core.fsutil import read_json, sha256_file_cached

SHARD_FORMAT = 2  # 2: splits by parent document and domain; eval splits de-duplicated against training
MANIFEST = "manifest.json"
UINT16_MAX_VOCAB = 1 << 16


class SplitStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    docs: int = 0
    bytes: int = 0  # UTF-8 bytes of the documents' text that went into this split
    tokens: int = 0  # after the cap, EOS included
    text_tokens: int = 0  # tokens of the documents taken, before the cap, EOS excluded
    capped: bool = False  # the token cap cut this split
    sha256: str = ""
    dup_exact: int = 0  # documents dropped as exact duplicates of training documents (hdee.data.dedup)
    dup_near: int = 0  # ... as MinHash near-duplicates of a training document
    dup_contained: int = 0  # ... because most of their n-grams occur in training text
    dup_bytes: int = 0  # UTF-8 bytes of the dropped documents

    @property
    def dup_docs(self) -> int:
        return self.dup_exact + self.dup_near + self.dup_contained


class DomainManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = SHARD_FORMAT
    domain: str
    role: str
    tier: str | None = None
    source: dict[str, Any]
    source_fingerprint: dict[str, Any]
    fingerprint: str  # hash of every input of this domain's shards
    max_bytes: int | None = None
    tokenizer_hash: str
    vocab_size: int
    eos_id: int
    dtype: Literal["uint16", "uint32"]
    docs_read: int = 0
    bytes_read: int = 0
    invalid_utf8: int = 0  # byte sequences replaced by U+FFFD while decoding
    splits: dict[str, SplitStats]

    def duplicate_share(self) -> float:
        """Share of the evaluation text read (bytes) that was dropped as a duplicate of training data."""
        dropped = sum(s.dup_bytes for s in self.splits.values())
        kept = sum(s.bytes for name, s in self.splits.items() if name != "train")
        return dropped / (dropped + kept) if dropped else 0.0

    def bytes_per_token(self) -> float | None:
        text_tokens = sum(s.text_tokens for s in self.splits.values())
        return sum(s.bytes for s in self.splits.values()) / text_tokens if text_tokens else None


def dtype_for_vocab(vocab_size: int, requested: str = "auto") -> str:
    if requested == "uint32":
        return "uint32"
    fits = vocab_size <= UINT16_MAX_VOCAB
    if requested == "uint16" and not fits:
        raise DataError(f"data.token_dtype = 'uint16' cannot hold a vocabulary of {vocab_size} tokens; use 'auto' or 'uint32'")
    return "uint16" if fits else "uint32"


def np_dtype(name: str) -> np.dtype:
    return np.dtype(name).newbyteorder("<")


def load_manifest(domain_dir: str | Path) -> DomainManifest:
    path = Path(domain_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: no manifest; run `hdee prepare` first")
    try:
        return DomainManifest.model_validate(read_json(path))
    except (ValidationError, ValueError) as exc:
        raise DataError(f"{path}: invalid manifest ({str(exc).splitlines()[0]})") from None


def eos_of(domain_dir: str | Path) -> int | None:
    """The EOS id of a prepared domain's shards; None for text without a manifest (a reader of its
    own, as `hdee eval --data` uses), whose document boundaries are unknown."""
    try:
        return load_manifest(domain_dir).eos_id
    except HdeeError:
        return None


def check_files(domain_dir: str | Path, manifest: DomainManifest) -> None:
    """Every split file exists and its size matches the manifest's token count."""
    item = np_dtype(manifest.dtype).itemsize
    for name, stats in manifest.splits.items():
        path = Path(domain_dir) / stats.file
        if not path.is_file():
            raise DataError(f"{path}: missing shard for split {name!r}")
        size = path.stat().st_size
        if size != stats.tokens * item:
            raise DataError(f"{path}: {size} bytes, manifest says {stats.tokens} tokens x {item} bytes")


def verify_split(domain_dir: str | Path, manifest: DomainManifest, split: str) -> None:
    """The split file's sha256 is the manifest's (hashed once per process until the file changes)."""
    stats = manifest.splits[split]
    path = Path(domain_dir) / stats.file
    if stats.sha256 != sha256_file_cached(path):
        raise DataError(f"{path}: sha256 does not match {MANIFEST} (corrupt or modified); `hdee prepare` rebuilds it")


def read_split(domain_dir: str | Path, split: str) -> np.ndarray:
    """Token ids of one split as a read-only memmap (an empty array for an empty split), checksum verified."""
    manifest = load_manifest(domain_dir)
    if split not in manifest.splits:
        raise DataError(f"{domain_dir}: no split {split!r} (has {', '.join(manifest.splits)})")
    check_files(domain_dir, manifest)
    verify_split(domain_dir, manifest, split)
    stats = manifest.splits[split]
    dt = np_dtype(manifest.dtype)
    if stats.tokens == 0:
        return np.zeros(0, dtype=dt)
    return np.memmap(Path(domain_dir) / stats.file, dtype=dt, mode="r", shape=(stats.tokens,))


class SplitWriter:
    """Appends token ids to one split file, up to an optional cap; with no path it only counts."""

    def __init__(self, path: Path | None, dtype: str, cap: int | None, name: str = ""):
        self.path = path
        self.dtype = np_dtype(dtype)
        self.cap = cap
        self.stats = SplitStats(file=path.name if path else name)
        self._f = open(path, "wb") if path else None

    @property
    def full(self) -> bool:
        return self.cap is not None and self.stats.tokens >= self.cap

    def remaining(self) -> int | None:
        return None if self.cap is None else max(self.cap - self.stats.tokens, 0)

    def add(self, ids: list[list[int]], texts_bytes: list[int], eos_id: int) -> int:
        """Append documents, each followed by EOS; return how many were taken (those past the cap are not)."""
        if self.full or not ids:
            return 0
        lengths = np.array([len(d) + 1 for d in ids], dtype=np.int64)
        flat = np.fromiter(itertools.chain.from_iterable(d + [eos_id] for d in ids), dtype=np.int64, count=int(lengths.sum()))
        n_docs = len(ids)
        room = self.remaining()
        if room is not None and len(flat) > room:
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            n_docs = int((starts < room).sum())
            flat = flat[:room]
            self.stats.capped = True
        self.stats.docs += n_docs
        self.stats.bytes += sum(texts_bytes[:n_docs])
        self.stats.text_tokens += int(lengths[:n_docs].sum()) - n_docs
        self.stats.tokens += len(flat)
        if self._f is not None:
            self._f.write(flat.astype(self.dtype).tobytes())
        return n_docs

    def close(self) -> None:
        if self._f is None:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
