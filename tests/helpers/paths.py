"""Where the checkout's files are, for tests anywhere under tests/."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TEST_DATA = ROOT / "tests" / "data"


def pythonpath(*first: Path) -> str:
    """PYTHONPATH for a child process (a worker, a Ray task) that imports test modules by their
    package names (`tests.unit...`): `first`, then the checkout, then the caller's own PYTHONPATH."""
    parts = [str(p) for p in (*first, ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts)
