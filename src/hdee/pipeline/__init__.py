"""The run as a whole: `run_experiment` (prepare -> plan -> execute -> evaluate -> report) and the
run-level operations the CLI shares with it (`operations`). `run_experiment` is imported on first
use, so that `hdee plan` and the other light commands do not load training and evaluation."""

from typing import Any

__all__ = ["run_experiment"]


def __getattr__(name: str) -> Any:
    if name == "run_experiment":
        from hdee.pipeline.experiment import run_experiment

        return run_experiment
    raise AttributeError(f"module 'hdee.pipeline' has no attribute {name!r}")
