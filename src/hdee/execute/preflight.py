"""Before the first job on a cluster: does every node see this run directory and run the same hdee?

Workers read and write the run directory by path, so it must be on storage every node shares
under the same absolute path; otherwise jobs would write where the driver never looks. The
driver writes a token file into the run directory (`.cluster/preflight/`); a probe on each node
reads it back, reads the run's config.json as its own hdee understands it (its fingerprint) and
writes its answer beside the token, which the driver then reads. Any difference stops the run
in one line that names the node. The Slurm backend runs the same probe at the start of every job.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from pathlib import Path
from typing import Any, Mapping

import hdee
from hdee.core.errors import ExecutionError, HdeeError
from hdee.core.fsutil import atomic_write_json, read_json
from hdee.core.layout import RunLayout

SHARED = "the run directory must be on storage every node shares under the same path"


def preflight_dir(run_dir: str | Path) -> Path:
    return RunLayout(run_dir).cluster_dir / "preflight"


def _config_fingerprint(layout: RunLayout) -> str | None:
    """The run's config as this process's hdee reads it (None: no config.json, as for bare job lists)."""
    from hdee.run import read_config

    if not layout.config_snapshot.is_file():
        return None
    return read_config(layout).fingerprint()


class Expectation(dict):
    """What the driver sees: its hdee version, the config's fingerprint and a fresh token file."""

    @classmethod
    def write(cls, run_dir: str | Path) -> "Expectation":
        layout = RunLayout(run_dir)
        token = secrets.token_hex(8)
        atomic_write_json(preflight_dir(run_dir) / f"{token}.json", {"token": token})
        return cls(run_dir=str(layout.root), token=token, version=hdee.__version__, config=_config_fingerprint(layout))

    def clean(self) -> None:
        """Remove this check's files (and the folder, when no other check uses it)."""
        folder = preflight_dir(self["run_dir"])
        for path in folder.glob(f"{self['token']}*.json"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def probe(expect: Mapping[str, Any], node: str) -> dict[str, Any]:
    """On a node: what it sees of the run directory, and which hdee and config it would run."""
    report: dict[str, Any] = {"node": node, "host": socket.gethostname(), "version": hdee.__version__}
    folder = preflight_dir(expect["run_dir"])
    try:
        report["sees_run_dir"] = read_json(folder / f"{expect['token']}.json").get("token") == expect["token"]
    except (OSError, ValueError, AttributeError):
        report["sees_run_dir"] = False
    if not report["sees_run_dir"]:
        return report
    try:
        report["config"] = _config_fingerprint(RunLayout(expect["run_dir"]))
    except (HdeeError, ValueError, OSError) as exc:  # a plugin it cannot import, a config it reads otherwise
        report["config_error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        atomic_write_json(folder / f"{expect['token']}.{secrets.token_hex(4)}.json", report)
        report["wrote"] = True
    except OSError as exc:
        report["wrote"] = False
        report["write_error"] = exc.strerror or str(exc)
    return report


def problem(report: Mapping[str, Any], expect: Mapping[str, Any]) -> str | None:
    """What is wrong with one node's answer, in words (None: nothing)."""
    root = expect["run_dir"]
    if not report.get("sees_run_dir"):
        return f"does not see the run directory {root} (no token file under it); {SHARED}"
    if report.get("version") != expect["version"]:
        return f"runs hdee {report.get('version')}, this driver hdee {expect['version']}; install the same hdee on every node"
    if "config_error" in report:
        return f"cannot read {root}/config.json: {report['config_error']}"
    if report.get("config") != expect["config"]:
        return (f"reads {root}/config.json as {str(report.get('config'))[:12]}, this driver as {str(expect['config'])[:12]}; "
                "install the same hdee and plugins on every node")
    if not report.get("wrote"):
        return f"cannot write into {root}: {report.get('write_error')}"
    return None


def check_node(report: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    """ExecutionError naming the node when its answer differs from the driver's view."""
    why = problem(report, expect)
    if why is not None:
        raise ExecutionError(f"node {report.get('node')} ({report.get('host')}) {why}")


def check_written_back(reports: list[Mapping[str, Any]], expect: Mapping[str, Any]) -> None:
    """Every node's answer must also lie in the run directory the driver sees (a write that
    landed on a node-local disk at the same path would not)."""
    found = []
    for path in preflight_dir(expect["run_dir"]).glob(f"{expect['token']}.*.json"):
        try:
            found.append(read_json(path).get("node"))
        except (OSError, ValueError, AttributeError):
            continue
    for report in reports:
        if report.get("node") not in found:
            raise ExecutionError(
                f"node {report.get('node')} ({report.get('host')}) wrote its answer under {expect['run_dir']}, "
                f"but this driver does not see it there; {SHARED}"
            )
