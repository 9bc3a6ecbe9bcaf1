"""One function every executor calls: `run_job(job_spec_json, run_dir)`.

It runs the job as its kind says (`execute.kinds`: data preparation, training or scoring, whose
logic lives in those packages), then
writes a done record `jobs/<id>.json` listing the sha256 of every output, so a later run can
skip the job after checking those checksums. Worker processes import this module only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from hdee.core.errors import ExecutionError
from hdee.core.fsutil import atomic_write_json, read_json, sha256_file
from hdee.core.provenance import job_cost
from hdee.execute import devices, fault
from hdee.execute.kinds import JOB_KINDS, MODEL_KINDS, JobKindSpec
from hdee.expert_dir import CARD as CARD_FILE
from hdee.plan.schema import Job
from hdee.core.layout import RunLayout
from hdee.run import read_config

ProgressFn = Callable[[str, int, int], None]  # (job id, step, steps)
#: what an executor calls for one job: (job spec JSON, run dir, progress) -> result
JobRunner = Callable[[str, str, "ProgressFn | None"], dict]


def outputs_of(job: Job, layout: RunLayout) -> list[Path]:
    """The files a finished job leaves behind (what its done record checksums)."""
    return _kind(job).outputs(job, layout)


def _kind(job: Job) -> JobKindSpec:
    if job.kind not in JOB_KINDS:
        raise ExecutionError(f"job {job.id}: unknown kind {job.kind!r}")
    return JOB_KINDS[job.kind]


def is_done(job: Job, run_dir: str | Path) -> bool:
    """True when the done record exists and every output it lists still has its checksum."""
    path = RunLayout(run_dir).done_record(job.id)
    if not path.is_file():
        return False
    try:
        rec = read_json(path)
        outputs = rec["outputs"]
    except (ValueError, KeyError, OSError):
        return False
    if rec.get("id") != job.id or not outputs:
        return False
    root = Path(run_dir)
    for rel, digest in outputs.items():
        p = root / rel
        if p.name == CARD_FILE and job.kind in MODEL_KINDS:  # records written before the card was left out
            continue
        if not p.is_file() or sha256_file(p) != digest:
            return False
    return True


def run_job(job_spec_json: str, run_dir: str | Path, progress: ProgressFn | None = None) -> dict:
    """Run one job of a plan (idempotent) and write its done record; returns the job's result."""
    job = Job.model_validate_json(job_spec_json)
    layout = RunLayout(run_dir)
    trap = fault.arm(job.kind, layout.root, job.steps)

    def on_progress(step: int, steps: int) -> None:
        if progress is not None:
            progress(job.id, step, steps)
        trap.progress(step, steps)

    t0 = time.perf_counter()
    result = _kind(job).run(job, layout, read_config(layout), on_progress)
    cost = job_cost(time.perf_counter() - t0, devices.job_gpus(job.kind))
    trap.before_record()
    write_record(job, layout.root, result, outputs_of(job, layout), cost)
    return result


def write_record(job: Job, run_dir: str | Path, result: dict, outputs: list[Path], cost: dict | None = None) -> None:
    """Mark `job` done: its result, the sha256 of each output file (paths relative to run_dir) and its cost."""
    root = Path(run_dir)
    if not outputs:
        raise ExecutionError(f"job {job.id} finished but left no outputs under {root}")
    atomic_write_json(
        RunLayout(root).done_record(job.id),
        {
            "id": job.id,
            "kind": job.kind,
            "result": result,
            "outputs": {os.path.relpath(p, root): sha256_file(p) for p in outputs},
            **({"cost": cost} if cost is not None else {}),
        },
    )
