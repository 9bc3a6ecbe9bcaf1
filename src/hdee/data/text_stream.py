"""Text to evaluate on, as a stream of pieces that never holds a whole large file.

`hdee eval --data` reads until it has the tokens it scores, then stops: a plain text file is
read and decoded in blocks, and every document (a file, a jsonl line, a parquet row, a dataset
record) is handed on in pieces of at most `PIECE_CHARS` characters, cut after a line end where
there is one, so the tokenizer never sees more than a piece at a time. A document no longer than
a piece is tokenized exactly as before; at a cut inside a longer one, a token may split in two.

The text must be UTF-8 without NUL bytes: anything else (a binary file, another encoding) is
refused in one line naming the file and byte offset, never scored as replacement characters.
"""

from __future__ import annotations

import codecs
from typing import Iterator

from hdee.config import DomainConfig

from hdee.data.sources import FilesSource
from hdee.data.documents import Document
from hdee.data.sources import FileDocs, open_source
from hdee.core.errors import DataError

PIECE_CHARS = 1 << 16
BLOCK_BYTES = 1 << 20
ENCODING_NOTE = "hdee eval --data reads UTF-8 text only; convert it first (e.g. iconv -t UTF-8)"


def text_pieces(domain: DomainConfig) -> Iterator[tuple[str, bool, bool]]:
    """(piece, first piece of its document, last piece of its document), in source order."""
    source = domain.source
    if isinstance(source, FilesSource):
        files = FileDocs(source, f"--data {', '.join(source.paths)}")
        for path, rel in files.files:
            if files.is_plain(path):
                yield from _cut(_plain_blocks(path))
            else:
                for doc in files.file_documents(path, rel):
                    yield from _cut(iter([_checked(doc, f"{path}:{doc.id.rsplit(':', 1)[-1]}")]))
        return
    for doc in open_source(domain).documents():
        yield from _cut(iter([_checked(doc, f"--data record {doc.id}")]))


def _checked(doc: Document, at: str) -> str:
    if doc.invalid_utf8:
        raise DataError(f"{at}: not UTF-8 text ({doc.invalid_utf8} invalid byte sequences); {ENCODING_NOTE}")
    if "\x00" in doc.text:
        raise DataError(f"{at}: holds a NUL character, binary data rather than text; {ENCODING_NOTE}")
    return doc.text


def _plain_blocks(path: str) -> Iterator[str]:
    """A file's text, decoded block by block (strict UTF-8, no NUL), never read whole."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(BLOCK_BYTES)
            nul = raw.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{path}: a NUL byte at offset {offset + nul}: binary data, not text; {ENCODING_NOTE}")
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not UTF-8 text (invalid byte at offset {offset - pending + exc.start}); "
                                f"{ENCODING_NOTE}") from None
            offset += len(raw)
            if text:
                yield text
            if not raw:
                return


def _cut(blocks: Iterator[str]) -> Iterator[tuple[str, bool, bool]]:
    """One document's text (as blocks) in pieces of at most PIECE_CHARS, cut after a line end when
    the piece has one; a document with nothing but blank space yields nothing."""
    buf, first, seen = "", True, False
    for block in blocks:
        buf += block
        while len(buf) > PIECE_CHARS:
            cut = buf.rfind("\n", 0, PIECE_CHARS) + 1 or PIECE_CHARS
            piece, buf = buf[:cut], buf[cut:]
            seen = seen or bool(piece.strip())
            yield piece, first, False
            first = False
    if seen or buf.strip():
        yield buf, first, True
