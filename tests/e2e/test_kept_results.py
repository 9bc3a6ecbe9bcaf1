"""A repeat's results carried to a new machine without its models are kept by a rerun; any change
to what they were computed from evaluates again (hdee.pipeline.operations.kept_results)."""

from __future__ import annotations

import shutil

import pytest

import hdee.pipeline.experiment as pipeline
from hdee.core.fsutil import atomic_write_json, read_json
from hdee.pipeline.operations import kept_results
from hdee.run import current_plan, prepared_vocab
from tests.helpers.tiny_run import InlineExecutor


def _carried(tiny_run, dest):
    """The tiny run's directory with its models, scores, routers and the done records of its
    training and scoring jobs gone: what a results archive carries (with the shards it prepares)."""
    layout = tiny_run.copy(dest)
    for folder in (layout.experts_dir, layout.scores_dir, layout.root / "routers"):
        shutil.rmtree(folder, ignore_errors=True)
    for record in layout.jobs_dir.glob("*.json"):
        if not record.name.startswith("prepare-"):
            record.unlink()
    return layout


@pytest.mark.slow  # the session's tiny run
def test_a_rerun_keeps_carried_results_and_trains_nothing(tmp_path, tiny_run, monkeypatch):
    layout = _carried(tiny_run, tmp_path / "run")
    before = layout.results_path(0).read_bytes()
    monkeypatch.setattr(pipeline, "make_executor", lambda cfg, run_dir, **kw: InlineExecutor(run_dir))
    summary = pipeline.run_experiment(tiny_run.cfg, layout, view=False)
    assert summary["repeats_kept"] == 1 and summary["jobs_run"] == 0
    assert layout.results_path(0).read_bytes() == before
    assert not any(layout.experts_dir.glob("*")) and layout.report_md.is_file()


@pytest.mark.slow  # the session's tiny run
def test_kept_only_when_config_plan_and_record_match(tmp_path, tiny_run):
    layout = _carried(tiny_run, tmp_path / "run")
    cfg = tiny_run.cfg
    plan = current_plan(cfg, prepared_vocab(layout), layout, 0)
    assert kept_results(cfg, layout, plan)
    # how the run executes is not what it computes
    assert kept_results(cfg.model_copy(update={"execute": cfg.execute.model_copy(update={"workers": 7})}), layout, plan)
    # a setting of the evaluation, or of training, is
    evaluated = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"prior_alpha": cfg.eval.prior_alpha + 0.5})})
    assert not kept_results(evaluated, layout, plan)
    assert not kept_results(cfg, layout, plan.model_copy(update={"jobs": plan.jobs[:-1]}))
    # in the directory where its jobs ran, a rerun verifies them and evaluates again
    shutil.copy(tiny_run.layout.done_record(plan.jobs[-1].id), layout.done_record(plan.jobs[-1].id))
    assert not kept_results(cfg, layout, plan)
    layout.done_record(plan.jobs[-1].id).unlink()
    assert kept_results(cfg, layout, plan)
    # results without a record of their source (an older hdee), or damaged, are evaluated again
    results = read_json(layout.results_path(0))
    del results["provenance"]["source"]
    atomic_write_json(layout.results_path(0), results)
    assert not kept_results(cfg, layout, plan)
    layout.results_path(0).write_text("{torn")
    assert not kept_results(cfg, layout, plan)
