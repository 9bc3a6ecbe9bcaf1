"""Where everything of one run lives. Paths are named by what they hold, never by time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # data (owned by hdee.data)
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer_path(self) -> Path:
        return self.data_dir / "tokenizer.json"

    def domain_dir(self, domain: str) -> Path:
        return self.data_dir / "domains" / domain

    # models (owned by hdee.train, named by plan job ids)
    @property
    def experts_dir(self) -> Path:
        return self.root / "experts"

    def expert_dir(self, job_id: str) -> Path:
        return self.experts_dir / job_id

    # evaluation (owned by hdee.ensemble / hdee.evaluate)
    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def results_json(self) -> Path:
        return self.results_dir / "results.json"

    # bookkeeping
    @property
    def config_snapshot(self) -> Path:
        return self.root / "config.json"

    @property
    def plan_json(self) -> Path:
        return self.root / "plan.json"
