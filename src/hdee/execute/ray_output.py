"""Ray's own output kept out of hdee's: what Ray's processes write to this process's stderr
while a cluster starts or stops (auth notices, state dumps, C++ log lines) goes to a file.

`HDEE_RAY_LOGS=1` leaves it on stderr, for debugging a cluster.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

ENV = "HDEE_RAY_LOGS"


def ray_log_path() -> Path:
    """Where Ray's output of this process goes (one file per process, appended to)."""
    return Path(tempfile.gettempdir()) / f"hdee-ray-{os.getpid()}.log"


@contextlib.contextmanager
def ray_output_aside() -> Iterator[Path | None]:
    """Inside: file descriptor 2 points at `ray_log_path()` (unless HDEE_RAY_LOGS is set)."""
    if os.environ.get(ENV, "").strip() not in ("", "0"):
        yield None
        return
    path = ray_log_path()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = os.dup(2)
    os.dup2(fd, 2)  # Ray's C++ parts and the processes it starts
    try:
        with open(path, "a", encoding="utf-8") as text, contextlib.redirect_stderr(text):  # its Python parts
            yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
