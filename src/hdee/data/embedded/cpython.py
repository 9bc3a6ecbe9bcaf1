"""Domains built from files CPython ships (no download; they change with the Python patch version)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

from hdee.data.documents import Document, decode_utf8
from hdee.data.embedded.domain import BuildContext, register
from hdee.data.embedded.text_extract import docstrings, html_to_text

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3"}


def _stdlib_modules(ctx: BuildContext) -> Iterator[tuple[str, Path]]:
    root = ctx.stdlib
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_DIRS.intersection(rel.parts[:-1]):
            continue
        yield rel.as_posix(), path


def _read(path: Path) -> str:
    return decode_utf8(path.read_bytes())[0]


@register("py_stdlib_code", "Python standard library source code (Lib/*.py, no tests)")
def py_stdlib_code(ctx: BuildContext) -> Iterator[Document]:
    for rel, path in _stdlib_modules(ctx):
        yield Document(rel, _read(path))


@register("py_stdlib_tests", "Python standard library test suite (Lib/test)")
def py_stdlib_tests(ctx: BuildContext) -> Iterator[Document]:
    root = ctx.stdlib / "test"
    for path in sorted(root.rglob("*.py")):
        yield Document(path.relative_to(ctx.stdlib).as_posix(), _read(path))


@register("py_docstrings", "docstrings of the Python standard library, one document per module")
def py_docstrings(ctx: BuildContext) -> Iterator[Document]:
    for rel, path in _stdlib_modules(ctx):
        docs = docstrings(_read(path))
        if docs:
            yield Document(rel, "\n\n".join(docs))


@register("pydoc_topics", "pydoc help topics (pydoc_data/topics.py), one document per topic")
def pydoc_topics(ctx: BuildContext) -> Iterator[Document]:
    # read the dict literal rather than importing the module
    tree = ast.parse(_read(ctx.stdlib / "pydoc_data" / "topics.py"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            topics = ast.literal_eval(node.value)
            for key in sorted(topics):
                yield Document(key, topics[key])


@register("idle_docs", "IDLE's manual (idlelib/help.html, one document per section) and change logs (one per entry)")
def idle_docs(ctx: BuildContext) -> Iterator[Document]:
    # prose about an editor: unlike the stdlib's docstrings, none of it is in the stdlib's code
    root = ctx.stdlib / "idlelib"
    for part in re.split(r'(?=<section id=")', _read(root / "help.html")):
        m = re.match(r'<section id="([^"]+)"', part)
        if m:
            yield Document(f"help.html#{m.group(1)}", html_to_text(part).replace("\u00b6", ""))
    for name in ("NEWS.txt", "NEWS2x.txt", "HISTORY.txt", "README.txt", "TODO.txt", "extend.txt"):
        if (root / name).is_file():
            for i, entry in enumerate(_read(root / name).split("\n\n")):
                yield Document(f"{name}#{i:04d}", entry)


@register("py_c_headers", "CPython's C API headers (include/python3.x/**/*.h)")
def py_c_headers(ctx: BuildContext) -> Iterator[Document]:
    root = ctx.include
    for path in sorted(root.rglob("*.h")):
        yield Document(path.relative_to(root).as_posix(), _read(path))


@register("py_license", "CPython's LICENSE file, one document per paragraph")
def py_license(ctx: BuildContext) -> Iterator[Document]:
    text = _read(ctx.stdlib / "LICENSE.txt")
    for i, para in enumerate(p for p in text.split("\n\n") if p.strip()):
        yield Document(f"LICENSE.txt#{i:04d}", para)
