"""`hdee plan`'s time estimate: from the run's own finished jobs, else from timed training steps here."""

from __future__ import annotations

import math
import re

from typer.testing import CliRunner

from hdee.cli.app import app
from hdee.core.fsutil import read_json
from hdee.plan import Plan
from hdee.execute.throughput import bench_rate, estimate, run_rate


def test_a_fresh_run_is_estimated_from_timed_steps(tiny, tmp_path):
    from hdee.pipeline.operations import preview_plan
    from hdee.core.layout import RunLayout

    layout = RunLayout(tmp_path / "fresh")
    plan = preview_plan(tiny, layout).plan
    rate, source = bench_rate(tiny, plan, budget_s=0.2)
    assert rate > 0 and source.startswith("benchmarked here: ") and "size S" in source
    est = estimate(tiny, plan, layout, bench_s=0.2)
    assert est.jobs == sum(1 for j in plan.jobs if j.kind in ("seed", "train", "pilot", "dense"))
    assert math.isclose(est.seconds, est.flops / (est.rate * est.workers))
    res = CliRunner().invoke(app, ["plan", "configs/tiny.toml", "--run-dir", str(layout.root)])
    assert res.exit_code == 0, res.output
    assert re.search(r"^time: about .+ to train the \d+ training jobs left \([0-9.e+]+ hardware FLOPs\) on \d+ workers? at [0-9.e+]+ FLOP/s each, "
                     r"benchmarked here", res.stdout, re.M)


def test_a_started_run_is_estimated_from_its_own_jobs(tiny_run, tmp_path):
    layout = tiny_run.copy(tmp_path / "run")
    plan = Plan.model_validate(read_json(layout.plan_json))
    trained = [j for j in plan.jobs if j.kind == "train"]
    layout.done_record(trained[0].id).unlink()  # one job left to train
    rate, source = run_rate(plan, layout)
    costs = [(j, read_json(layout.done_record(j.id))["cost"]["seconds"]) for j in plan.jobs
             if j.kind in ("seed", "train") and layout.done_record(j.id).is_file()]
    assert math.isclose(rate, sum(j.flops_by["hardware"] for j, _ in costs) / sum(s for _, s in costs))
    assert source == f"measured on this run's {len(costs)} finished training jobs"
    est = estimate(tiny_run.cfg, plan, layout)
    assert est.jobs == 1 and math.isclose(est.seconds, trained[0].flops_by["hardware"] / (rate * est.workers))
    done = estimate(tiny_run.cfg, plan, tiny_run.layout)
    assert done.jobs == 0 and done.seconds == 0
