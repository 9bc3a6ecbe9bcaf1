"""Job ids hash only their real inputs: a finished run reuses every trained model when only evaluation changes."""

from __future__ import annotations

import json

import pytest

from hdee.config import DomainConfig
from hdee.data.sources import FilesSource
from hdee.core.errors import ConfigError
from hdee.core.fsutil import sha256_file
from hdee.execute.kinds import MODEL_KINDS
from hdee.core.layout import RunLayout
from hdee.pipeline.experiment import run_experiment



def _files(layout: RunLayout, folder) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(layout.root)): (sha256_file(p), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _experts(layout: RunLayout) -> dict[str, tuple[str, int]]:
    """Every file of every model but its card, which evaluation rewrites with the measured perplexities."""
    return {k: v for k, v in _files(layout, layout.experts_dir).items() if not k.endswith("/README.md")}


def _jobs(layout: RunLayout) -> dict[str, dict]:
    return {j["id"]: j for j in json.loads(layout.plan_json.read_text())["jobs"]}


def _run(cfg, layout, force=False) -> tuple[int, list[dict]]:
    before = _jobs(layout) if layout.plan_json.is_file() else {}
    summary = run_experiment(cfg, layout, backend="local", workers=2, force=force, view=False)
    new = [j for jid, j in _jobs(layout).items() if jid not in before]
    return summary["jobs_run"], new


@pytest.mark.slow
def test_new_heldout_domain_prior_alpha_and_strategy_reuse_trained_models(tmp_path, tiny):
    layout = RunLayout(tmp_path / "run")
    trained_only = [d for d in tiny.domains if d.role == "train"]  # fewer score jobs: the test is about reuse
    base = tiny.model_copy(update={"strategies": ["MHo-IHo"], "domains": trained_only})
    _run(base, layout)
    trained = _experts(layout)
    scored = _files(layout, layout.scores_dir)
    n_models = len([j for j in _jobs(layout).values() if j["kind"] in MODEL_KINDS])

    # 1. a new held-out domain: refused without --force, naming it; then only its scores run
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(40):
        (notes / f"n{i:02d}.txt").write_text(f"Note {i}: the meeting moved to room {i % 7}; bring the draft and coffee.\n" * 6)
    added = base.model_copy(update={"domains": [*base.domains, DomainConfig(
        name="notes", role="heldout", source=FilesSource(paths=[str(notes / "*.txt")]))]})
    with pytest.raises(ConfigError, match=f"differs in domains \\+notes\\); all {n_models} trained models would be reused"):
        _run(added, layout)
    ran, new = _run(added, layout, force=True)
    assert _experts(layout) == trained  # byte-identical, not even rewritten
    assert {j["kind"] for j in new} == {"prepare", "score"} and ran == len(new)
    assert all("notes" in j["domains"] for j in new if j["kind"] == "score")
    now = _files(layout, layout.scores_dir)  # only the new domain was scored: the other scores were not rewritten
    assert {k: v for k, v in now.items() if k in scored} == scored
    assert {k.split("/")[-1].split(".")[0] for k in now if k not in scored} == {"notes"}
    results = json.loads(layout.results_json.read_text())
    assert "notes" in [d["name"] for d in results["domains"]]
    cards = _files(layout, layout.experts_dir)
    some = next(k for k in cards if k.endswith("/README.md"))
    assert "name: notes" in (layout.root / some).read_text()  # the card's model-index gained the new domain

    # 2. a mixing setting: nothing runs, the numbers are mixed again
    alpha = added.model_copy(update={"eval": added.eval.model_copy(update={"prior_alpha": 0.9})})
    ran, new = _run(alpha, layout, force=True)
    assert ran == 0 and new == [] and _experts(layout) == trained
    assert {k: v for k, v in _files(layout, layout.experts_dir).items() if k.endswith("/README.md")} == {
        k: v for k, v in cards.items() if k.endswith("/README.md")}  # the same perplexities: cards not even rewritten
    again = json.loads(layout.results_json.read_text())
    assert again["ensembles"]["MHo-IHo"]["priors"] != results["ensembles"]["MHo-IHo"]["priors"]
    assert again["experts"] == results["experts"]

    # 3. another strategy: only its own experts train (the seed and data are shared)
    more = alpha.model_copy(update={"strategies": ["MHo-IHo", "MHo-IHe"]})
    ran, new = _run(more, layout, force=True)
    kinds = [j["kind"] for j in new]
    assert set(kinds) == {"train", "score"} and ran == len(new)
    assert all(j["used_by"] == ["MHo-IHe"] for j in new if j["kind"] == "train")
    assert {k: v for k, v in _experts(layout).items() if k in trained} == trained

    # 4. a training setting: the refusal says the trained models would not be reused
    n_now = len(list(layout.experts_dir.glob("*/hdee.json")))
    decayed = more.model_copy(update={"train": more.train.model_copy(update={"weight_decay": 0.1})})
    with pytest.raises(ConfigError, match=f"differs in train.weight_decay\\); {n_now} of {n_now} trained models would not be reused"):
        _run(decayed, layout)
