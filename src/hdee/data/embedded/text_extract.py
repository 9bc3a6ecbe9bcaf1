"""Small extractors shared by the builders: docstrings, HTML to text, wiki markup to text."""

from __future__ import annotations

import ast
import html
import re
from html.parser import HTMLParser

DOCSTRING_MIN_CHARS = 40


def docstrings(source: str) -> list[str]:
    """Module, class and function docstrings over DOCSTRING_MIN_CHARS, in source order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= DOCSTRING_MIN_CHARS:
                out.append(doc)
    return out


class _TextCollector(HTMLParser):
    _BLOCK = {"p", "li", "br", "div", "h1", "h2", "h3", "h4", "ul", "ol", "pre", "table", "tr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):  # noqa: ANN001
        self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextCollector()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I)
_PIPED = re.compile(r"\[\[[^\[\]|]*\|([^\[\]]*)\]\]")
_PLAIN = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXT = re.compile(r"\[https?://\S+\s*([^\]]*)\]")
_TAGS = re.compile(r"</?[a-zA-Z][^>]*>")


def _strip_templates(text: str) -> str:
    out, depth, i = [], 0, 0
    while i < len(text):
        two = text[i : i + 2]
        if two == "{{":
            depth += 1
            i += 2
        elif two == "}}" and depth:
            depth -= 1
            i += 2
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def wiki_to_text(markup: str) -> str:
    text = html.unescape(markup)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _strip_templates(text)
    text = _TABLE.sub("", text)
    text = _FILE_LINK.sub("", text)
    text = _PIPED.sub(r"\1", text)
    text = _PLAIN.sub(r"\1", text)
    text = _EXT.sub(r"\1", text)
    text = _TAGS.sub("", text)
    text = text.replace("'''", "").replace("''", "")
    return re.sub(r"\n{3,}", "\n\n", text).strip()
