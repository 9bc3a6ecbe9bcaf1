"""Where downloaded wheels and built embedded domains are kept between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$HDEE_CACHE`, else `$XDG_CACHE_HOME/hdee`, else `~/.cache/hdee`."""
    if env := os.environ.get("HDEE_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "hdee"
