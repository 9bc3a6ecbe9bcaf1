"""One writer per run directory: an exclusive `fcntl.flock` on `<run_dir>/.lock`.

Every command that writes into a run directory holds it for its whole life; a second one
fails at once with the holder's pid instead of deleting the first one's temp files. The
kernel drops the lock when its holder dies, even by SIGKILL, so a stale lock cannot exist;
the file itself is left behind and only says who held it last.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from hdee.core.errors import LockError

LOCK_FILE = ".lock"


def _holder(f) -> str:
    f.seek(0)
    text = f.read().strip()
    return text or "an unknown process"


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path, command: str) -> Iterator[Path]:
    """Hold the run directory (created if missing) exclusively while the block runs."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise LockError(f"{path}: cannot lock the run directory ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError(
                f"{run_dir}: in use by {_holder(f)}; wait for it to finish (one command per run directory)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} (hdee {command})\n")
        f.flush()
        yield path
    finally:
        f.close()  # closing the descriptor releases the lock
