"""Provenance: code version and commit, packages, hardware, command line, and job costs per strategy."""

import os
import subprocess
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

import hdee
from hdee.execute.kinds import COST_GROUPS
from hdee.core.provenance import command_line, environment, git_commit, strategy_costs, total_costs
from tests.helpers.paths import ROOT



def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def test_environment_names_versions_hardware_and_command():
    env = environment(["/some/venv/bin/hdee", "run", "configs/embedded.toml", "--seeds", "3"])
    assert env["hdee"] == hdee.__version__
    for name in ("torch", "transformers", "tokenizers"):
        assert env["packages"][name] == metadata.version(name)
    assert env["hardware"]["cpus"] == os.cpu_count() and env["hardware"]["cpu"]
    assert isinstance(env["hardware"]["gpus"], list)
    assert env["command"] == "hdee run configs/embedded.toml --seeds 3"
    assert command_line(["hdee", "run", "a b.toml"]) == "hdee run 'a b.toml'"


def test_git_commit_only_for_a_checkout_of_the_package(tmp_path):
    if (ROOT / ".git").exists():  # the tests run from a checkout of hdee
        assert git_commit()["commit"] == _git(ROOT, "rev-parse", "HEAD")
    repo = tmp_path / "repo"
    pkg = repo / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    assert git_commit(pkg) is None  # not tracked: e.g. an install inside some other repository
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    assert git_commit(pkg) == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}
    (pkg / "__init__.py").write_text("x = 2\n")
    assert git_commit(pkg)["dirty"] is True
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) is None


def _job(job_id, kind, *used_by):
    return SimpleNamespace(id=job_id, kind=kind, used_by=list(used_by))


def test_costs_per_strategy_count_each_seed_model_once():
    rec = lambda s, gpus=0: {"cost": {"seconds": s, "gpus": gpus, "host": "h"}}  # noqa: E731
    repeat0 = [_job("seed-M", "seed", "A", "B"), _job("t1", "train", "A"), _job("t2", "train", "B"),
               _job("sc1", "score", "A"), _job("prep", "prepare")]
    records0 = {"seed-M": rec(100, 1), "t1": rec(10, 1), "t2": rec(20), "sc1": rec(3), "prep": rec(5)}
    repeat1 = [_job("seed-M", "seed", "A"), _job("t3", "train", "A"), _job("missing", "train", "A")]
    records1 = {"seed-M": rec(100, 1), "t3": rec(12, 1)}
    c0 = strategy_costs(repeat0, records0, COST_GROUPS)
    assert c0["A"]["domain_phase"] == {"seconds": 10, "gpu_hours": pytest.approx(10 / 3600), "jobs": 1}
    assert c0["A"]["scoring"]["seconds"] == 3 and c0["B"]["seed_jobs"] == {"seed-M": {"seconds": 100, "gpus": 1}}
    total = total_costs([c0, strategy_costs(repeat1, records1, COST_GROUPS)])
    assert total["A"] == {"seed": 100, "domain_phase": 22, "scoring": 3, "gpu_hours": pytest.approx((100 + 10 + 12) / 3600)}
    assert total["B"] == {"seed": 100, "domain_phase": 20, "scoring": 0, "gpu_hours": pytest.approx(100 / 3600)}
