"""The one pattern for every name that becomes part of a path.

Experiment, domain, lineage, size, strategy names and job ids all end up as directory or file
names under a run directory. They must start with a letter or digit (so never `.`, `..` or a
hidden `.name` that stale-temp cleanup would remove) and hold only letters, digits, `_`, `-`
and `.`: no separator can appear, so no name can point outside its directory.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

NAME_MAX = 64
JOB_ID_MAX = 200  # job ids join several names and a hash
_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RULE = "letters, digits, '_', '-' and '.', starting with a letter or digit"


def check_name(value: str, what: str = "name", max_len: int = NAME_MAX) -> str:
    """`value` if it is a safe path component, else ValueError saying what is wrong."""
    if not isinstance(value, str) or not _PATTERN.fullmatch(value) or len(value) > max_len:
        raise ValueError(f"{what} {value!r} must be 1-{max_len} {RULE}")
    return value


def _name(value: str) -> str:
    return check_name(value)


def _job_id(value: str) -> str:
    return check_name(value, "job id", JOB_ID_MAX)


#: a pydantic string type for names that become paths
Name = Annotated[str, AfterValidator(_name)]
#: the same rule for job ids, which may be longer
JobId = Annotated[str, AfterValidator(_job_id)]
