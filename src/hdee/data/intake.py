"""Reading a domain's documents into its splits: the split of each document, the token caps, the filters.

`route` is the one loop that decides which documents a split takes; shard building and the
training index both use it, so the index holds exactly what the train shards hold.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
from tokenizers import Tokenizer

from hdee.config import DomainConfig, ExperimentConfig
from hdee.data.dedup import TrainingIndex
from hdee.data.documents import Document
from hdee.data.shards import SplitWriter
from hdee.data.sources import DocumentSource, capped, default_max_bytes
from hdee.data.split import SPLITS, split_for_role, split_of, splits_for_role
from hdee.data.tokenizer import eos_token

BATCH_BYTES = 1 << 20  # text handed to one encode_batch call
BATCH_DOCS = 1024
MAX_BYTES_PER_TOKEN = 8  # pending text this many times a split's remaining room surely fills it


def training_domains(cfg: ExperimentConfig) -> list[DomainConfig]:
    """Domains whose train split is trained on (by experts or seed models)."""
    return [d for d in cfg.domains if d.role in ("train", "seed")]


def train_cap(cfg: ExperimentConfig, d: DomainConfig) -> int | None:
    """The domain's own train-split cap when it sets one, else data.max_train_tokens."""
    return d.max_train_tokens if d.max_train_tokens is not None else cfg.data.max_train_tokens


def eval_cap(cfg: ExperimentConfig, d: DomainConfig) -> int | None:
    """The domain's own val/test-split cap when it sets one, else data.max_eval_tokens."""
    return d.max_eval_tokens if d.max_eval_tokens is not None else cfg.data.max_eval_tokens


def split_caps(cfg: ExperimentConfig, d: DomainConfig) -> dict[str, int | None]:
    wanted = splits_for_role(d.role)
    caps = {"train": train_cap(cfg, d), "val": eval_cap(cfg, d), "test": eval_cap(cfg, d)}
    return {s: (caps[s] if s in wanted else 0) for s in SPLITS}


class DuplicateFilter:
    """Drops val/test documents that duplicate training data, counting them in the split's stats."""

    def __init__(self, index: TrainingIndex | None, writers: dict[str, SplitWriter]):
        self.index = index
        self.writers = writers

    def __call__(self, split: str, docs: list[Document]) -> list[Document]:
        if split == "train" or self.index is None or not self.index.enabled:
            return docs
        kept = []
        stats = self.writers[split].stats
        for doc, match in zip(docs, self.index.matches(docs)):
            if match is None:
                kept.append(doc)
                continue
            setattr(stats, f"dup_{match}", getattr(stats, f"dup_{match}") + 1)
            stats.dup_bytes += len(doc.text.encode("utf-8"))
        return kept


class Encoder:
    """Tokenizes documents; what the training index tokenized is kept for the build to reuse once."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.eos_id = tok.token_to_id(eos_token(tok))
        self._kept: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, domain: str, docs: list[Document], keep: bool = False) -> list[list[int]]:
        todo = [doc for doc in docs if (domain, doc.id) not in self._kept]
        fresh = iter(self.tok.encode_batch([doc.text for doc in todo], add_special_tokens=False) if todo else [])
        out = []
        for doc in docs:
            kept = self._kept.pop((domain, doc.id), None)
            ids = kept.tolist() if kept is not None else next(fresh).ids
            if keep:
                self._kept[(domain, doc.id)] = np.asarray(ids, dtype=np.uint32)
            out.append(ids)
        return out


def route(d: DomainConfig, cfg: ExperimentConfig, source: DocumentSource, encode: Encoder,
          writers: dict[str, SplitWriter], wanted: tuple[str, ...], keep_encodings: bool = False,
           keep: Callable[[str, list[Document]], list[Document]] = lambda s, docs: docs,
           taken: Callable[[str, list[Document]], None] = lambda s, docs: None) -> tuple[int, int, int]:
    """Read `d`'s documents in order into their splits' writers until every wanted split is full.

    `keep` filters a batch before it is written; `taken` sees the documents a split took;
    `keep_encodings` has `encode` hold the token ids for the next pass over the same documents.
    Returns (documents read, bytes read, invalid UTF-8 sequences).
    """
    docs_read = bytes_read = invalid = 0
    pending: dict[str, list[Document]] = {s: [] for s in SPLITS}
    pending_bytes = dict.fromkeys(SPLITS, 0)

    def flush(s: str) -> None:
        docs = keep(s, pending[s]) if pending[s] else []
        pending[s], pending_bytes[s] = [], 0
        if docs:
            ids = encode(d.name, docs, keep_encodings)
            n = writers[s].add(ids, [len(doc.text.encode("utf-8")) for doc in docs], encode.eos_id)
            taken(s, docs[:n])

    for doc in capped(source.documents(), default_max_bytes(d)):
        if all(writers[s].full for s in wanted):
            break
        docs_read += 1
        size = len(doc.text.encode("utf-8"))
        bytes_read += size
        invalid += doc.invalid_utf8
        s = split_for_role(doc.split_key, d.name, cfg.data.split, d.role)
        if writers[s].full:
            continue
        pending[s].append(doc)
        pending_bytes[s] += size
        room = writers[s].remaining()
        if (pending_bytes[s] >= BATCH_BYTES or len(pending[s]) >= BATCH_DOCS
                or (room is not None and pending_bytes[s] >= room * MAX_BYTES_PER_TOKEN)):
            flush(s)
    for s in SPLITS:
        flush(s)
    return docs_read, bytes_read, invalid


def training_index(cfg: ExperimentConfig, sources: dict[str, DocumentSource], encode: Encoder, dtype: str,
                   progress: Callable[[str], None] = lambda what: None) -> TrainingIndex:
    """Index exactly the documents that the train splits of the training domains take."""
    index = TrainingIndex(cfg.data.dedup)
    for d in training_domains(cfg):
        progress(f"indexing training documents of {d.name}")
        cap = split_caps(cfg, d)["train"]
        if cap is None:  # uncapped: every train-split document is taken, no need to tokenize
            docs = (doc for doc in capped(sources[d.name].documents(), default_max_bytes(d))
                    if split_of(doc.split_key, d.name, cfg.data.split) == "train")
            for batch in iter(lambda: list(itertools.islice(docs, BATCH_DOCS)), []):
                index.add(d.name, batch)
        else:  # val and test take nothing here (cap 0), so reading stops once train is full
            writers = {s: SplitWriter(None, dtype, cap if s == "train" else 0, s) for s in SPLITS}
            route(d, cfg, sources[d.name], encode, writers, ("train",), keep_encodings=True,
                  taken=lambda s, docs: index.add(d.name, docs))
    return index
