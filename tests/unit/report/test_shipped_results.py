"""The registered run's results shipped in docs/results/regime/ are results of the config and the
pre-registration this checkout holds: a change to either that alters what the run computes makes
this fail, so the README never reports a run of another experiment as this one."""

from __future__ import annotations

import json
import lzma
import re

import pytest

from hdee.config import ExperimentConfig, load_config
from hdee.pipeline.operations import computing_fingerprint
from hdee.report.prereg import load_prereg
from tests.helpers.paths import ROOT

SHIPPED = ROOT / "docs/results/regime"


def _repeat(path) -> int:
    m = re.fullmatch(r"results(?:-seed-models-repeat(\d+))?\.json\.xz", path.name)
    assert m, f"{path.name}: not a results file of a seed-models repeat"
    return int(m.group(1) or 0)


def test_shipped_results_are_repeats_0_to_k_of_this_config_and_preregistration():
    files = sorted(SHIPPED.glob("results*.json.xz"), key=_repeat)
    if not files:
        pytest.fail("docs/results/regime holds no results")
    assert [_repeat(f) for f in files] == list(range(len(files)))  # no gap: hdee report reads 0..k in order
    config = computing_fingerprint(load_config(ROOT / "configs/regime.toml"))
    _, prereg_sha = load_prereg(ROOT / "docs/preregistration.toml")
    snapshot = json.loads((SHIPPED / "config.json").read_text())
    assert computing_fingerprint(ExperimentConfig.model_validate(snapshot)) == config  # the run's own config.json
    for f in files:
        prov = json.loads(lzma.decompress(f.read_bytes()))["provenance"]
        assert prov["source"]["config_sha256"] == config, f"{f.name} was computed from another config"
        assert prov["preregistration"]["sha256"] == prereg_sha, f"{f.name} was made under another pre-registration"
        assert prov["repeat"] == _repeat(f) and prov["vary"] == (None if prov["repeat"] == 0 else "seed-models")
