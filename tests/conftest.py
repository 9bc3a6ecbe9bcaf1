"""Fixtures shared by the test modules: the shipped configs, loaded once."""

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
