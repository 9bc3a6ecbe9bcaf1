"""The run as a whole: `run_experiment` (prepare -> plan -> execute -> evaluate -> report) and the
run-level operations the CLI shares with it (`operations`)."""

from hdee.pipeline.experiment import run_experiment

__all__ = ["run_experiment"]
