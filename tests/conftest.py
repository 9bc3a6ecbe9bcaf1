"""Fixtures shared by the test modules: the shipped configs, loaded once, and a finished tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest

from hdee.config import ExperimentConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="session")
def tiny() -> ExperimentConfig:
    return load_config(CONFIGS / "tiny.toml")


@pytest.fixture(scope="session")
def paper() -> ExperimentConfig:
    return load_config(CONFIGS / "paper-small-close.toml")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished `hdee run` of tiny.toml with MHo-IHo and MHe-IHo (real trainer); read-only: copy to damage."""
    import torch

    from tiny_run import build

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build(tmp_path_factory.mktemp("tiny_run"))
    finally:
        torch.set_num_threads(threads)
