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
from hdee.core.layout import refuse_outside_links

LOCK_FILE = ".lock"


def _holder(f) -> str:
    f.seek(0)
    text = f.read().strip()
    return text or "an unknown process"


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path, command: str) -> Iterator[Path]:
    """Hold the run directory (created if missing) exclusively while the block runs; refused while
    a symbolic link inside it leads outside (`hdee.core.layout.refuse_outside_links`)."""
    run_dir = Path(run_dir)
    if (run_dir / LOCK_FILE).is_symlink():
        raise LockError(f"{run_dir / LOCK_FILE}: a symbolic link; hdee locks only a plain file there, remove the link")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LockError(f"{run_dir / LOCK_FILE}: cannot lock the run directory ({exc.strerror or exc})") from None
    with file_lock(run_dir / LOCK_FILE, run_dir, command, "one command per run directory") as path:
        refuse_outside_links(run_dir)  # under the lock: nothing else changes the tree meanwhile
        yield path


def output_lock_path(out: str | Path) -> Path:
    """The lock file of an output directory that is replaced as a whole: beside it, not inside."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def file_lock(path: Path, what: str | Path, command: str, rule: str, remove: bool = False) -> Iterator[Path]:
    """Hold `path` (a lock file guarding `what`) exclusively; a second holder fails at once, naming
    the first. With `remove`, the file is deleted on release (a waiter that opened the deleted file
    notices and opens the new one), so nothing is left behind."""
    while True:
        try:
            f = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            raise LockError(f"{path}: cannot lock {what} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f)
            f.close()
            raise LockError(f"{what}: in use by {holder}; wait for it to finish ({rule})") from None
        if not remove or _same_file(f, path):
            break
        f.close()  # the holder before us removed it: lock the current one
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} (hdee {command})\n")
        f.flush()
        yield path
    finally:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        f.close()  # closing the descriptor releases the lock


def _same_file(f, path: Path) -> bool:
    try:
        return os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
