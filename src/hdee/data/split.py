"""Train/val/test assignment by a hash of the document id.

A document's split depends on its id and the fractions only, so adding documents to a domain
never moves the ones already there.
"""

from __future__ import annotations

import hashlib

from hdee.config import SplitConfig

SPLITS = ("train", "val", "test")


def split_of(doc_id: str, split: SplitConfig) -> str:
    digest = hashlib.sha256(b"hdee-split\0" + doc_id.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < split.train:
        return "train"
    if u < split.train + split.val:
        return "val"
    return "test"


def split_for_role(doc_id: str, split: SplitConfig, role: str) -> str:
    """Held-out domains are only evaluated: their train share goes to test (their train split stays empty)."""
    s = split_of(doc_id, split)
    return "test" if role == "heldout" and s == "train" else s


def splits_for_role(role: str) -> tuple[str, ...]:
    return ("val", "test") if role == "heldout" else SPLITS
