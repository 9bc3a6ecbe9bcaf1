"""`hdee plan`, `hdee run`."""

from __future__ import annotations

from hdee.cli.app import app  # noqa: F401
