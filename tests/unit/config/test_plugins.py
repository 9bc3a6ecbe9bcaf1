"""Extension points: this file alone registers a strategy and a mixing method (one call each), and a
config that names it in `plugins` runs them with `hdee run` on configs/tiny.toml, in worker
processes too (they import the plugin when they read the run's config)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hdee.ensemble.methods import register_method
from hdee.registry import MIXING_METHODS, STRATEGIES
from hdee.strategies import Assignment, Strategy, register
from tests.helpers.paths import ROOT, pythonpath

HERE = Path(__file__).resolve().parent
STRATEGY = "test-early-heavy"
METHOD = "test-first-expert"


def describe_front(decision: dict) -> list[str]:
    return [f"{STRATEGY}: steps per iteration {decision['steps']}"]


class FrontLoaded(Strategy):
    """Baseline size; the first iteration gets the second's steps and the reverse (same budget)."""

    def assign(self, pilot_outputs=None) -> Assignment:
        steps = self.cfg.budget.baseline.steps
        per_iteration = [steps + 2, steps - 2]
        experts = self.lineage_experts(lambda lin, i: self.cfg.budget.baseline.size, lambda lin, i: per_iteration[i - 1])
        return Assignment(experts, decision={"steps": per_iteration})


register(STRATEGY, FrontLoaded, heterogeneous=True, order=-1, describe=describe_front)
register_method(METHOD, score=lambda lp, log_prior, top_k: np.asarray(lp, dtype=np.float64)[0])


def _config(tmp_path: Path) -> Path:
    text = (ROOT / "configs/tiny.toml").read_text()
    old = 'strategies = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense"]'
    assert old in text
    text = f'plugins = ["{Path(__file__).stem}"]\n' + text.replace(old, f'strategies = ["MHo-IHo", "{STRATEGY}"]')
    text = text.replace("[eval]\n", f'[eval]\nmethods = ["uniform", "prefix-posterior", "{METHOD}"]\n')
    path = tmp_path / "plugged.toml"
    path.write_text(text)
    return path


def _hdee(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": pythonpath(HERE)}
    return subprocess.run(
        [sys.executable, "-c", "from hdee.cli import main; main()", *args],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=900,
    )


def test_registering_is_one_call_and_the_traits_are_read(tiny):
    entry = STRATEGIES.get(STRATEGY)
    assert entry.cls is FrontLoaded and entry.heterogeneous and not entry.needs_sizes
    method = MIXING_METHODS.get(METHOD)
    assert method.cached and not method.can_generate and method.candidate_default
    # what a process has imported never changes a config's defaults: plugin methods are named
    assert METHOD not in MIXING_METHODS.builtin_names() and METHOD not in tiny.eval.methods


def test_config_without_the_plugin_refuses_its_names(tmp_path):
    from hdee.config import load_config
    from hdee.core.errors import ConfigError

    text = _config(tmp_path).read_text().split("\n", 1)[1]  # the same config, no plugins line
    path = tmp_path / "unplugged.toml"
    path.write_text(text)
    STRATEGIES.remove(STRATEGY)
    try:
        with pytest.raises(ConfigError, match=f"unknown strategy '{STRATEGY}'"):
            load_config(path)
    finally:
        register(STRATEGY, FrontLoaded, heterogeneous=True, order=-1, describe=describe_front)


def test_unknown_plugin_is_one_line(tmp_path):
    from hdee.config import load_config
    from hdee.core.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text('plugins = ["no_such_plugin_module"]\n' + (ROOT / "configs/tiny.toml").read_text())
    with pytest.raises(ConfigError, match="plugins: cannot import plugin 'no_such_plugin_module'") as exc:
        load_config(path)
    assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_hdee_run_with_a_plugin_strategy_and_mixing_method(tmp_path):
    config, run_dir = _config(tmp_path), tmp_path / "run"
    plan = _hdee("plan", str(config), "--run-dir", str(run_dir), "--no-estimate")
    assert plan.returncode == 0, plan.stderr
    assert f"{STRATEGY}: steps per iteration [10, 6]" in plan.stdout  # its describe trait

    res = _hdee("run", str(config), "--run-dir", str(run_dir), "--no-view", "--workers", "2")
    assert res.returncode == 0, res.stderr
    results = json.loads((run_dir / "results/results.json").read_text())
    assert set(results["ensembles"]) == {"MHo-IHo", STRATEGY}
    assert results["methods"] == ["uniform", "prefix-posterior", METHOD]
    for ens in results["ensembles"].values():
        first = results["experts"][ens["experts"][0]]["ppl"]
        assert ens["ppl"][METHOD] == first  # the plugin's mixture is its first expert, exactly
    mine = results["ensembles"][STRATEGY]
    assert mine["meta"]["decision"] == {"steps": [10, 6]}
    assert sorted(results["experts"][e]["meta"]["steps"] for e in mine["experts"]) == [6, 6]  # the final iteration
    md = (run_dir / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| domain |"))
    assert header.startswith(f"| domain | tier | {STRATEGY} | MHo-IHo |")  # its order trait
    assert f"is the lowest of {STRATEGY}, MHo-IHo (ties count" in md  # counted as heterogeneous
