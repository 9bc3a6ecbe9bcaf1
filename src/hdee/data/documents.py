"""The unit every source yields: a document with a stable id, plus text clean-up helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class Document:
    """`id` must be stable across runs: the split of a document is a function of it (or of `parent`).

    `parent` is the id of the document a piece was cut from: all pieces of one document share
    its split, so no piece of a test document is trained on.
    """

    id: str
    text: str
    invalid_utf8: int = 0  # byte sequences replaced by U+FFFD while decoding
    parent: str | None = None

    @property
    def split_key(self) -> str:
        return self.parent or self.id


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing invalid bytes; return the text and how many sequences were replaced."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return text, text.count("\ufffd") - raw.count("\ufffd".encode("utf-8"))


def normalize_text(text: str) -> str:
    """Unix newlines, no control characters except tab and newline, no surrounding blank space."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()


def dedupe_key(text: str) -> str:
    """Key under which near-identical documents (case, punctuation, spacing) count as one."""
    return _NOT_ALNUM.sub("", text.lower())
