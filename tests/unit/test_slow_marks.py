"""The suite's `slow` rule (tests/conftest.py), run on small test files of its own: users of the
training fixture are slow, and a test that takes a training step unmarked fails."""

from __future__ import annotations

from hdee.train import loop
from tests.helpers.paths import ROOT

CONFTEST = (ROOT / "tests" / "conftest.py").read_text()


def test_users_of_the_training_fixture_are_deselected_by_not_slow(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_mix="""
        import pytest

        @pytest.fixture
        def built(tiny_run):
            return tiny_run

        def test_direct(tiny_run): pass
        def test_through_a_fixture(built): pass
        def test_plain(): pass
    """)
    result = pytester.runpytest("--collect-only", "-q", "-m", "not slow")
    result.stdout.fnmatch_lines(["test_mix.py::test_plain", "*1/3 tests collected (2 deselected)*"])
    result = pytester.runpytest("--collect-only", "-q", "-m", "slow")
    result.stdout.fnmatch_lines(["*2/3 tests collected (1 deselected)*"])


def test_a_training_step_without_the_mark_fails_the_test(pytester, monkeypatch):
    # the inner session watches the real step, not this session's watcher
    monkeypatch.setattr(loop, "_train_step", loop._train_step.__wrapped__)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_steps="""
        import pytest
        from hdee.train import loop

        def test_unmarked():
            with pytest.raises(TypeError):  # reaching the step is enough: it is noted before it runs
                loop._train_step()

        @pytest.mark.slow
        def test_marked():
            with pytest.raises(TypeError):
                loop._train_step()

        def test_no_step(): pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*test_steps.py::test_unmarked trains a model but is not marked slow*"])
