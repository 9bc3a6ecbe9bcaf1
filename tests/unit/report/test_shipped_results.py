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



def _sections(markdown: str) -> dict[str, str]:
    """A report's `## ` sections by heading, each body stripped (the title before them under "")."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {"": parts[0].strip(), **{h: b.strip() for h, b in zip(parts[1::2], parts[2::2])}}


SHIPPED_REPORT = SHIPPED / "report-seed-models.md"


def test_shipped_report_is_what_this_checkout_computes_from_the_shipped_results(tmp_path):
    """docs/results/regime/report-seed-models.md (what the README quotes) is rebuilt by this
    checkout's `hdee report` from the shipped results alone, every section but "How this was made"
    (this machine, its versions, the command line)."""
    from hdee.core.layout import RunLayout
    from hdee.pipeline.operations import report_run

    run = tmp_path / "regime"
    (run / "results").mkdir(parents=True)
    (run / "config.json").write_bytes((SHIPPED / "config.json").read_bytes())
    for f in SHIPPED.glob("results*.json.xz"):
        (run / "results" / f.name.removesuffix(".xz")).write_bytes(lzma.decompress(f.read_bytes()))
    report_run(run, "seed-models")
    rebuilt, _ = RunLayout(run).report_files("seed-models")
    assert rebuilt.name == SHIPPED_REPORT.name
    shipped, ours = _sections(SHIPPED_REPORT.read_text()), _sections(rebuilt.read_text())
    for sections in (shipped, ours):
        sections.pop("How this was made")
    assert ours == shipped


@pytest.mark.parametrize("section", ["Regime gates (validation data)", "Verdict (pre-registered)", "Results"])
def test_readme_quotes_the_shipped_report_verbatim(section):
    """The README's results section carries the shipped report's gates, verdict and main table as written."""
    body = _sections(SHIPPED_REPORT.read_text())[section]
    assert body and body in (ROOT / "README.md").read_text(), f"README.md does not quote the report's {section!r} as shipped"
