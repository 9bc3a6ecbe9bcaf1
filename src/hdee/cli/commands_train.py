"""`hdee train`: one training job (seed or branch) from the command line."""

from __future__ import annotations

from hdee.cli.app import app  # noqa: F401
