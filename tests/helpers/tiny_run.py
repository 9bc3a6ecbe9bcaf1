"""A finished run of configs/tiny.toml (two strategies), built once per test session.

Its experts come from the real pipeline and trainer, so tests of averaging, generation and bad
inputs see what `hdee run` really writes (hdee.json with a `size` dict, recorded checksums,
the run's tokenizer hash). Jobs run in this process, one after another: no worker start-up.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pytest

from hdee.config import ExperimentConfig, load_config
from hdee.execute.base import Executor
from hdee.execute.jobs import run_job
from hdee.core.fsutil import read_json
from hdee.core.layout import RunLayout
from tests.helpers.paths import ROOT

STRATEGIES = ["MHo-IHo", "MHe-IHo"]


class InlineExecutor(Executor):
    """Runs each job in the calling process as soon as it is submitted."""

    def _submit(self, job) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(run_job(job.model_dump_json(), str(self.run_dir)))
        except BaseException as exc:  # noqa: BLE001 - handed to the executor loop like a worker's error
            fut.set_exception(exc)
        return fut


def tiny_config(path: Path) -> Path:
    """configs/tiny.toml with two strategies (S, M and L experts), written to `path`."""
    text = (ROOT / "configs/tiny.toml").read_text()
    old = 'strategies = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense"]'
    assert old in text
    path.write_text(text.replace(old, f"strategies = {STRATEGIES!r}".replace("'", '"')))
    return path


@dataclass(frozen=True)
class TinyRun:
    config_path: Path
    cfg: ExperimentConfig
    layout: RunLayout

    @property
    def plan(self) -> dict:
        return read_json(self.layout.plan_json)

    def final_experts(self, strategy: str) -> list[Path]:
        return [self.layout.expert_dir(e) for e in self.plan["ensembles"][strategy]["experts"]]

    def seed(self, size: str) -> Path:
        return next(d for d in sorted(self.layout.experts_dir.iterdir()) if d.name.startswith(f"seed-{size}-"))

    def copy(self, dest: Path) -> RunLayout:
        """A private copy of the whole run directory, to damage freely."""
        shutil.copytree(self.layout.root, dest)
        return RunLayout(dest)


def build(root: Path) -> TinyRun:
    import hdee.pipeline.experiment as pipeline

    cfg_path = tiny_config(root / "tiny.toml")
    cfg = load_config(cfg_path)
    layout = RunLayout(root / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "make_executor", lambda cfg, run_dir, **kw: InlineExecutor(run_dir))
        pipeline.run_experiment(cfg, layout, view=False)
    return TinyRun(cfg_path, cfg, layout)
