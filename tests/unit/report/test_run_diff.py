"""`hdee compare RUN_A RUN_B` and the results' schema version, on a run the real pipeline wrote."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from tests.helpers.cli_helpers import cli_error
from hdee.cli.app import app
from hdee.core.errors import HdeeError
from hdee.core.fsutil import read_json
from hdee.core.results_schema import SCHEMA_VERSION
from hdee.report.run_diff import diff_runs


def _edit_results(root, fn):
    path = root / "results" / "results.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def other(tiny_run, tmp_path):
    """A private copy of the tiny run, to change."""
    return tiny_run.copy(tmp_path / "b").root


def test_results_carry_the_schema_version(tiny_run):
    assert read_json(tiny_run.layout.results_json)["schema_version"] == SCHEMA_VERSION


def test_a_run_against_itself_changes_nothing(tiny_run):
    root = tiny_run.layout.root
    diff = diff_runs(root, root)
    assert diff["domains"] == [d["name"] for d in read_json(tiny_run.layout.results_json)["domains"]]
    for per in diff["kinds"].values():
        assert list(per["strategies"]) == ["MHo-IHo", "MHe-IHo"]
        assert all(c["change"] == 0 for row in per["strategies"].values() for c in row["domains"].values())
    res = CliRunner().invoke(app, ["compare", str(root), str(root)])
    assert res.exit_code == 0, res.output
    assert "geometric-mean test perplexity" in res.stdout and "+0.00%" in res.stdout and "per domain" in res.stdout


def test_differences_are_b_over_a(tiny_run, other):
    method = read_json(tiny_run.layout.results_json)["method_choice"]["method"]

    def raise_mhe(data):
        for d, v in data["ensembles"]["MHe-IHo"]["ppl"][method].items():
            data["ensembles"]["MHe-IHo"]["ppl"][method][d] = v * 1.1

    _edit_results(other, raise_mhe)
    diff = diff_runs(tiny_run.layout.root, other)
    main = diff["kinds"][tiny_run.cfg.ensemble]["strategies"]
    assert all(math.isclose(c["change"], 0.1) for c in main["MHe-IHo"]["domains"].values())
    assert math.isclose(main["MHe-IHo"]["mean"]["change"], 0.1) and main["MHe-IHo"]["lower_in_b"] == 0
    assert all(c["change"] == 0 for c in main["MHo-IHo"]["domains"].values())
    res = CliRunner().invoke(app, ["compare", str(tiny_run.layout.root), str(other)])
    assert res.exit_code == 0 and "+10.00%" in res.stdout


def test_runs_that_measured_other_things_are_refused(tiny_run, other):
    root = tiny_run.layout.root
    first = read_json(tiny_run.layout.results_json)["domains"][0]["name"]
    manifest = other / "data" / "domains" / first / "manifest.json"
    data = json.loads(manifest.read_text())
    data["splits"]["test"]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    assert f"the test windows of {first!r} differ" in cli_error(CliRunner().invoke(app, ["compare", str(root), str(other)]))

    _edit_results(other, lambda d: d["domains"].pop())
    assert "their domains differ" in cli_error(CliRunner().invoke(app, ["compare", str(root), str(other)]))


def test_windows_counted_differently_are_refused(tiny_run, other):
    _edit_results(other, lambda d: d["domains"][0].update(windows=d["domains"][0]["windows"] - 1))
    with pytest.raises(HdeeError, match="has windows"):
        diff_runs(tiny_run.layout.root, other)


def test_schema_versions(tiny_run, other):
    _edit_results(other, lambda d: d.pop("schema_version"))  # as every run before the key: version 1, read as it is
    assert diff_runs(tiny_run.layout.root, other)["kinds"]
    _edit_results(other, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    err = cli_error(CliRunner().invoke(app, ["compare", str(tiny_run.layout.root), str(other)]))
    assert f"results schema version {SCHEMA_VERSION + 1} is newer than this hdee's {SCHEMA_VERSION}" in err
    assert "newer than this hdee's" in cli_error(CliRunner().invoke(app, ["report", str(other)]))
    _edit_results(other, lambda d: d.update(schema_version="two"))
    assert "is not a positive integer" in cli_error(CliRunner().invoke(app, ["compare", str(other), str(tiny_run.layout.root)]))
