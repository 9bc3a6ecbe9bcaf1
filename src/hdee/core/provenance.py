"""Where a result came from: code version, packages, hardware, command line, and what it cost.

`environment()` describes the process that evaluates (and, with the local backend, trains);
`job_cost()` is what each job's done record keeps of its own run (wall time, device, host),
so `strategy_costs` can add up a strategy's jobs wherever they ran.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

import hdee

PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "numpy")


def git_commit(package_dir: Path | None = None) -> dict[str, Any] | None:
    """The commit (and whether the tree differs from it) of the checkout hdee is imported from, if any."""
    here = package_dir or Path(hdee.__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    # hdee's own files must be tracked: a site-packages install inside some other repository is no checkout of hdee
    if git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"host": socket.gethostname(), "cpu": _cpu_model(), "cpus": os.cpu_count(), "gpus": gpus}


def command_line(argv: list[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    return shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else ""


def environment(argv: list[str] | None = None) -> dict[str, Any]:
    """hdee version and commit, Python and package versions, hardware, command line, and the time now (UTC)."""
    return {
        "hdee": hdee.__version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "hardware": hardware(),
        "command": command_line(argv),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def job_cost(seconds: float, gpus: float) -> dict[str, Any]:
    """What a done record keeps of the run that finished the job (a resumed job: its last run only):
    its wall time, the GPUs it was given (a share below 1 when jobs share one) and its host."""
    return {"seconds": round(seconds, 3), "gpus": round(float(gpus), 6), "host": socket.gethostname()}


def strategy_costs(jobs: Iterable[Any], records: Mapping[str, dict], groups: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per strategy: the cost of each seed model it branches from, and of its domain-phase and scoring jobs.

    `jobs` are plan jobs (`kind`, `id`, `used_by`); `records` their done records by id; `groups`
    maps a job kind to "seed", "domain_phase" or "scoring" (`hdee.execute.kinds.COST_GROUPS`). Seed
    models serve several strategies and repeats, so they are kept by id: totals count each once.
    """
    out: dict[str, dict[str, Any]] = {}
    for job in jobs:
        group = groups.get(job.kind)
        cost = (records.get(job.id) or {}).get("cost")
        if group is None or cost is None:
            continue
        for strategy in job.used_by:
            row = out.setdefault(strategy, {"seed_jobs": {}, "domain_phase": _zero(), "scoring": _zero()})
            if group == "seed":
                row["seed_jobs"][job.id] = {"seconds": cost["seconds"], "gpus": cost.get("gpus", 0)}
            else:
                row[group]["seconds"] += cost["seconds"]
                row[group]["gpu_hours"] += cost["seconds"] * cost.get("gpus", 0) / 3600
                row[group]["jobs"] += 1
    return out


def _zero() -> dict[str, float]:
    return {"seconds": 0.0, "gpu_hours": 0.0, "jobs": 0}


def total_costs(per_repeat: list[Mapping[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """`strategy_costs` of several repeats added up: seconds and GPU-hours per strategy, each seed model once."""
    out: dict[str, dict[str, float]] = {}
    seeds: dict[str, dict[str, dict]] = {}
    for costs in per_repeat:
        for strategy, row in costs.items():
            tot = out.setdefault(strategy, {"seed": 0.0, "domain_phase": 0.0, "scoring": 0.0, "gpu_hours": 0.0})
            seeds.setdefault(strategy, {}).update(row.get("seed_jobs", {}))
            for group in ("domain_phase", "scoring"):
                tot[group] += row[group]["seconds"]
                tot["gpu_hours"] += row[group]["gpu_hours"]
    for strategy, by_id in seeds.items():
        out[strategy]["seed"] = sum(c["seconds"] for c in by_id.values())
        out[strategy]["gpu_hours"] += sum(c["seconds"] * c["gpus"] for c in by_id.values()) / 3600
    return out
