"""The version of the results files' format (`results.json`, `eval-*.json`, `without-*.json`).

`schema_version` is written into every results file. A file without the key is version 1:
the format of every run written before the key existed, which version 2 only extends by the
key itself, so version 1 files are read as they are. A file of a version this hdee does not
know (written by a newer one) is refused with one line rather than misread; when the format
changes incompatibly, SCHEMA_VERSION goes up and the readers migrate or refuse older files here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hdee.core.errors import HdeeError

SCHEMA_VERSION = 2
#: the oldest version the readers understand (1: the format before `schema_version` was written)
OLDEST_READABLE = 1


def version_of(results: dict[str, Any]) -> int:
    """The file's `schema_version` (1 when absent); HdeeError when it is not a positive integer."""
    version = results.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise HdeeError(f"schema_version {version!r} is not a positive integer")
    return version


def check_readable(results: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """`results` when this hdee reads its version, else one line saying what to do."""
    try:
        version = version_of(results)
    except HdeeError as exc:
        raise HdeeError(f"{where}: {exc}") from None
    if version > SCHEMA_VERSION:
        raise HdeeError(f"{where}: results schema version {version} is newer than this hdee's {SCHEMA_VERSION}; "
                        "upgrade hdee to read it")
    if version < OLDEST_READABLE:
        raise HdeeError(f"{where}: results schema version {version} is older than this hdee reads "
                        f"({OLDEST_READABLE}+); recompute them with `hdee eval RUN_DIR`")
    return results
