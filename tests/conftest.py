"""Fixtures every test can use (the shipped configs, loaded once; a finished tiny run) and the
`slow` rule: a test that trains a model is marked slow, so `-m "not slow"` is a fast loop.

Users of a training fixture are marked here at collection. A test that trains by itself carries
the mark in its own module; one that enters the training loop in this process without it fails,
so the fast loop cannot silently grow a training run. Training in a child process (`hdee run`,
torchrun, a killed-and-rerun script) is not seen here: those tests are marked by hand.
"""

from __future__ import annotations

import functools

import pytest

from hdee.config import ExperimentConfig, load_config
from tests.helpers.paths import CONFIGS

pytest_plugins = ["pytester"]

TRAINING_FIXTURES = frozenset({"tiny_run"})  # fixtures that run the real trainer

_running: list[str] = []  # the node id of the test whose setup, call or teardown is running
_trained: set[str] = set()  # tests during which the training loop took a step


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINING_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    _running.append(item.nodeid)
    try:
        yield
    finally:
        _running.pop()


@pytest.fixture(scope="session", autouse=True)
def _watch_training():
    """Notes each test (its fixtures included) that takes a training step in this process."""
    from hdee.train import loop

    step = loop._train_step

    @functools.wraps(step)
    def watched(*args, **kwargs):
        if _running:
            _trained.add(_running[-1])
        return step(*args, **kwargs)

    loop._train_step = watched
    try:
        yield
    finally:
        loop._train_step = step


@pytest.fixture(autouse=True)
def _trains_only_if_slow(request: pytest.FixtureRequest):
    yield
    node = request.node
    if node.nodeid in _trained and node.get_closest_marker("slow") is None:
        pytest.fail(f"{node.nodeid} trains a model but is not marked slow (@pytest.mark.slow)", pytrace=False)


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

    from tests.helpers.tiny_run import build

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build(tmp_path_factory.mktemp("tiny_run"))
    finally:
        torch.set_num_threads(threads)
