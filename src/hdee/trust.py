"""Whose code a read-only command may run: the plugins a run directory's config.json names.

A config's `plugins` are imported, so naming one runs its code. `hdee run` and `hdee prepare`
import them from the config file the user gives; the commands that only read a run directory
(`hdee eval`, `report`, `lm-eval`) find them in its config.json, which could come from anyone.
They import them only from a run directory started on this machine by this user (`hdee run`
leaves a note in the user's cache, `$HDEE_CACHE/trusted-runs/`, with the config.json it wrote),
or with `--trust-plugins`. Run directories are trusted input in every other way:
their files are checked for integrity, not for intent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hdee.data.cache import cache_root
from hdee.core.errors import ConfigError
from hdee.core.fsutil import atomic_write_json, read_json, sha256_bytes

TRUST_DIR = "trusted-runs"


def config_sha256(raw: dict[str, Any]) -> str:
    """The hash `ExperimentConfig.fingerprint()` gives the config this dict is the dump of."""
    return sha256_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())


def _note(run_root: Path) -> Path:
    key = sha256_bytes(os.path.realpath(run_root).encode())[:32]
    return cache_root() / TRUST_DIR / f"{key}.json"


def remember_run(run_root: str | Path, raw: dict[str, Any]) -> None:
    """Note that this user started the run at `run_root` with the config `raw` (its config.json)."""
    if not raw.get("plugins"):
        return
    try:
        atomic_write_json(_note(Path(run_root)), {"run_dir": os.path.realpath(run_root), "config_sha256": config_sha256(raw)})
    except OSError:
        pass  # no cache to write to: read-only commands will ask for --trust-plugins


def check_plugins(run_root: str | Path, config_path: Path, raw: dict[str, Any], trust: bool) -> None:
    """ConfigError unless the plugins `raw` names may be imported (none, trusted, or started here)."""
    plugins = raw.get("plugins")
    if not plugins or trust:
        return
    try:
        note = read_json(_note(Path(run_root)))
        if note.get("run_dir") == os.path.realpath(run_root) and note.get("config_sha256") == config_sha256(raw):
            return
    except (OSError, ValueError, AttributeError):
        pass
    names = ", ".join(map(str, plugins)) if isinstance(plugins, list) else repr(plugins)
    raise ConfigError(
        f"{config_path}: names plugins ({names}), whose code would run on import, and this run directory was not "
        "started here with this config.json; pass --trust-plugins if you trust it"
    )
