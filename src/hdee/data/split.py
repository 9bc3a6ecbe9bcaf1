"""Train/val/test assignment by a hash of the domain name and the document's split key.

A document's split depends on its domain, its key and the fractions only, so adding documents
to a domain never moves the ones already there. The key is the parent document's id for the
pieces of a long document (they all share one split). The domain name salts the hash: the same
file read by two domains (code and its docstrings, say) gets independent splits, and the
cross-domain de-duplication (`hdee.data.dedup`) removes what the test side shares with training.
"""

from __future__ import annotations

import hashlib

from hdee.config import SplitConfig

SPLITS = ("train", "val", "test")


def split_of(key: str, domain: str, split: SplitConfig) -> str:
    digest = hashlib.sha256(b"hdee-split\0" + domain.encode("utf-8") + b"\0" + key.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < split.train:
        return "train"
    if u < split.train + split.val:
        return "val"
    return "test"


def split_for_role(key: str, domain: str, split: SplitConfig, role: str) -> str:
    """Held-out domains are only evaluated: their train share goes to test (their train split stays empty)."""
    s = split_of(key, domain, split)
    return "test" if role == "heldout" and s == "train" else s


def splits_for_role(role: str) -> tuple[str, ...]:
    return ("val", "test") if role == "heldout" else SPLITS
