"""Atomic, checksummed writes. Readers never see a half-written file or directory.

Temp files and dirs come from `tempfile`, which creates them 0600/0700 whatever the umask;
they get the permissions a plain `open`/`mkdir` would have given before they are renamed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from hdee.core.errors import DiskFullError

FULL = (errno.ENOSPC, errno.EDQUOT)  # the errors a full disk (or quota) gives a writer


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_hashed(path: str | Path, data: bytes, chunk: int = 1 << 24) -> str:
    """Write `data` to `path` and return its sha256, hashing each block while the next is written.

    A checkpoint of gigabytes is hashed in the time it takes to write it, instead of being read
    back afterwards; hashlib and file writes both release the GIL, so the two overlap.
    """
    digest = hashlib.sha256()
    view = memoryview(data)
    with open(path, "wb") as f, concurrent.futures.ThreadPoolExecutor(max_workers=1) as hasher:
        for start in range(0, len(view), chunk):
            block = view[start : start + chunk]
            hashed = hasher.submit(digest.update, block)
            f.write(block)
            hashed.result()
    return digest.hexdigest()


def sha256_file_cached(path: str | Path) -> str:
    """sha256 of a file, hashed once per process until its size, mtime or inode changes."""
    st = os.stat(path)
    return _sha256_of(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=1024)
def _sha256_of(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_mode(path: str | Path, is_dir: bool) -> None:
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def plain_modes(directory: str | Path) -> None:
    """Give every file directly inside `directory` the umask's permissions (safetensors and
    other writers create theirs 0600 whatever the umask)."""
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False):
            _plain_mode(entry.path, is_dir=False)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _full(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            _write_file(f, data)
            f.flush()
            os.fsync(f.fileno())
        _plain_mode(tmp, is_dir=False)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _full(path, exc) from None
        raise
    _fsync_dir(path.parent)


def _write_file(f, data: bytes) -> None:
    f.write(data)


def _full(path: Path, exc: OSError) -> OSError:
    """A full disk as a one-line `DiskFullError` naming the file; any other OSError as it was."""
    if exc.errno not in FULL or isinstance(exc, DiskFullError):
        return exc
    return DiskFullError(exc.errno, f"{path}: {os.strerror(exc.errno).lower()}; the file was not replaced, "
                                    "earlier outputs are kept: free space and rerun")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside `final`; on success it replaces `final` in one rename.

    On any exception the temp directory is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        _plain_mode(tmp, is_dir=True)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale_temps(directory: str | Path) -> None:
    """Remove leftovers of interrupted atomic writes (`.*.tmp`) in `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for p in directory.glob(".*.tmp"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
