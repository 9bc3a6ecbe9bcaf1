"""The `auto` strategy inside the plan: pilots first, then an allocation under the same budget.

Pilot outputs are written by hand from known synthetic curves (the trainer's metrics.jsonl and
hdee.json formats), so these tests need no training and take well under a second each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hdee.config import ExperimentConfig, load_config
from hdee.core.errors import PlanError
from hdee.plan import build_plan
from hdee.budget import budget_flops, expert_flops
from hdee.strategies import StrategyContext, get_strategy
from hdee.strategies.auto.decide import decide, describe
from hdee.strategies.auto.pilots import pilot_points, pilot_specs
from tests.helpers.paths import ROOT

VOCAB = 512
TPS = 256  # tiny.toml train.batch_tokens

# tiny.toml has an "easy" and a "hard" lineage of two iterations: easy domains have a low
# loss floor and learn slowly, hard ones a high floor and a lot left to learn.
_LINEAGES = {lin.tier: lin.domains for lin in load_config(ROOT / "configs" / "tiny.toml").lineages}
LEVEL = {d: lvl for tier, base in (("easy", 2.0), ("hard", 4.0)) for d, lvl in zip(_LINEAGES[tier], (base, base * 1.1))}
SPEED = {d: (0.3 if d in _LINEAGES["easy"] else 2.0) for d in LEVEL}
POOLED = {"S": 4.2, "M": 4.0, "L": 3.7}  # seed models' pooled validation loss per size


def _cfg(**auto) -> ExperimentConfig:
    raw = load_config(ROOT / "configs" / "tiny.toml").model_dump(mode="json")
    raw["strategies"] = ["MHo-IHo", "auto"]
    raw["budget"]["baseline"]["steps"] = 40
    raw["budget"]["tolerance"] = 0.01  # the default: auto must fill the budget to 1%
    raw["auto"] = {**raw["auto"], **auto}
    return ExperimentConfig.model_validate(raw)


def _true_loss(domain: str, size: str, tokens: float) -> float:
    level = LEVEL[domain] * POOLED[size] / POOLED["M"]
    return level - 1.0 + SPEED[domain] * (1.0 + tokens / TPS) ** -0.5


def _write_pilots(tmp: Path, plan, loss=_true_loss, noise: float = 0.0) -> dict[str, str]:
    """Fake finished pilot dirs (metrics.jsonl + hdee.json) and their seed dirs."""
    rng = np.random.default_rng(0)
    outputs = {}
    for job in plan.jobs_of("pilot"):
        seed_dir = tmp / "experts" / job.parent
        seed_dir.mkdir(parents=True, exist_ok=True)
        (seed_dir / "hdee.json").write_text(json.dumps({"final_val_loss": POOLED[job.size]}))
        d = tmp / "experts" / job.id
        d.mkdir(parents=True)
        rows = [{"step": 0, "tokens": 0, "flops": 0.0, "val_loss": loss(job.domain, job.size, 0)}]
        for k in range(1, job.steps + 1):
            row = {"step": k, "tokens": k * TPS, "loss": loss(job.domain, job.size, (k - 1) * TPS) + noise * rng.normal()}
            if k == job.steps:
                row["val_loss"] = loss(job.domain, job.size, k * TPS)
            rows.append(row)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "hdee.json").write_text(json.dumps({"parent": {"path": str(seed_dir)}, "steps": job.steps}))
        outputs[job.id] = str(d)
    return outputs


def _by_name(cfg, plan, outputs) -> dict[str, Path]:
    """pilot name -> dir, as the plan hands them to the strategy."""
    names = {}
    for spec in pilot_specs(cfg, VOCAB):
        job = next(j for j in plan.jobs_of("pilot") if j.id.startswith(f"pilot-auto-{spec.name}-"))
        names[spec.name] = Path(outputs[job.id])
    return names


def test_stage_one_holds_the_pilots_and_auto_is_pending():
    cfg = _cfg()
    plan = build_plan(cfg, VOCAB)
    assert plan.ensembles["auto"].pending and plan.ensembles["auto"].experts == []
    pilots = plan.jobs_of("pilot")
    # one pilot per training domain at the baseline size, one single-step anchor per other size
    assert sorted((j.domain, j.size) for j in pilots if j.steps > 1) == sorted((d, "M") for d in LEVEL)
    assert sorted(j.size for j in pilots if j.steps == 1) == ["L", "S"]
    assert {j.size for j in plan.jobs_of("seed")} == {"S", "M", "L"}
    assert sum(j.flops for j in pilots) <= cfg.auto.pilot_fraction * budget_flops(cfg, VOCAB)
    assert not plan.ensembles["MHo-IHo"].pending


def test_stage_two_matches_budget_and_charges_pilots(tmp_path):
    cfg = _cfg()
    stage1 = build_plan(cfg, VOCAB)
    outputs = _write_pilots(tmp_path, stage1)
    plan = build_plan(cfg, VOCAB, pilot_outputs=outputs)
    ens = plan.ensembles["auto"]
    assert not ens.pending and len(ens.experts) == len(cfg.lineages)
    budget = budget_flops(cfg, VOCAB)
    mine = [j for j in plan.jobs if "auto" in j.used_by and j.kind in ("pilot", "train")]
    pilot = sum(j.flops for j in mine if j.kind == "pilot")
    experts = sum(j.flops for j in mine if j.kind == "train")
    assert pilot > 0
    assert ens.domain_flops == pytest.approx(pilot + experts)  # pilots are charged to auto
    assert ens.domain_flops <= budget * (1 + 1e-12)
    assert abs(ens.domain_flops / budget - 1) <= cfg.budget.tolerance
    # one size per lineage, iteration 2 branching from iteration 1
    for lin in cfg.lineages:
        jobs = sorted((j for j in mine if j.kind == "train" and j.lineage == lin.name), key=lambda j: j.iteration)
        assert len({j.size for j in jobs}) == 1
        assert jobs[1].parent == jobs[0].id


def test_hard_domains_get_more_compute(tmp_path):
    cfg = _cfg()
    stage1 = build_plan(cfg, VOCAB)
    outputs = _write_pilots(tmp_path, stage1, noise=0.01)
    dec = decide(cfg, VOCAB, _by_name(cfg, stage1, outputs)).to_dict()
    flops = {lin: sum(e["flops"] for e in dec["experts"] if e["lineage"] == lin) for lin in ("easy", "hard")}
    assert flops["hard"] > flops["easy"]
    # 3-step noisy pilots extrapolated ~15x: the prediction is rough (about 0.15 nats here) but
    # it keeps the domains' order
    for e in dec["experts"]:
        assert e["predicted_loss"] == pytest.approx(_true_loss(e["domain"], e["size"], e["steps"] * TPS), abs=0.2)
    pred = dec["predicted_loss"]
    assert max(pred[d] for d in _LINEAGES["easy"]) < min(pred[d] for d in _LINEAGES["hard"])
    assert abs(dec["off_budget"]) <= cfg.budget.tolerance
    assert dec["total_flops"] == pytest.approx(dec["pilot_flops"] + dec["expert_flops"])
    assert json.loads(json.dumps(dec)) == dec
    assert set(dec["curves"]) == set(LEVEL) and set(dec["curves"][_LINEAGES["easy"][0]]) == {"S", "M", "L"}
    text = "\n".join(describe(dec))
    assert _LINEAGES["hard"][-1] in text and "predicted loss" in text


def test_minimax_objective_runs_and_limits_the_worst(tmp_path):
    cfg_mean, cfg_max = _cfg(), _cfg(objective="minimax")
    stage1 = build_plan(cfg_mean, VOCAB)
    outputs = _write_pilots(tmp_path, stage1)
    names = _by_name(cfg_mean, stage1, outputs)
    mean = decide(cfg_mean, VOCAB, names).allocation
    worst = decide(cfg_max, VOCAB, names).allocation
    assert max(worst.predicted.values()) <= max(mean.predicted.values()) + 1e-9
    assert sum(mean.predicted.values()) <= sum(worst.predicted.values()) + 1e-9


def test_pilot_sizes_all(tmp_path):
    cfg = _cfg(pilot_sizes="all", pilot_fraction=0.3)
    stage1 = build_plan(cfg, VOCAB)
    assert sorted({j.size for j in stage1.jobs_of("pilot")}) == ["L", "M", "S"]
    assert all(j.steps >= cfg.auto.pilot_points for j in stage1.jobs_of("pilot"))
    outputs = _write_pilots(tmp_path, stage1)
    plan = build_plan(cfg, VOCAB, pilot_outputs=outputs)
    assert abs(plan.ensembles["auto"].domain_flops / budget_flops(cfg, VOCAB) - 1) <= cfg.budget.tolerance
    dec = decide(cfg, VOCAB, _by_name(cfg, stage1, outputs))
    assert all(c.kind != "shifted from M" for by in dec.curves.values() for c in by.values())


def test_flat_pilots_do_not_crash(tmp_path):
    cfg = _cfg()
    stage1 = build_plan(cfg, VOCAB)
    outputs = _write_pilots(tmp_path, stage1, loss=lambda d, s, t: 3.0)
    plan = build_plan(cfg, VOCAB, pilot_outputs=outputs)
    assert abs(plan.ensembles["auto"].domain_flops / budget_flops(cfg, VOCAB) - 1) <= cfg.budget.tolerance


def test_pilot_budget_too_small_is_one_line_error():
    cfg = _cfg(pilot_fraction=0.01)
    with pytest.raises(PlanError, match="auto.pilot_fraction") as err:
        build_plan(cfg, VOCAB)
    assert "\n" not in str(err.value)


def test_broken_pilot_outputs_are_plan_errors(tmp_path):
    cfg = _cfg()
    stage1 = build_plan(cfg, VOCAB)
    outputs = _write_pilots(tmp_path, stage1)
    victim = next(j for j in stage1.jobs_of("pilot") if j.steps > 1)
    (Path(outputs[victim.id]) / "metrics.jsonl").write_text('{"step": 1, "loss": NaN}\n{"step": 2, "loss": Infinity}\n{"st')
    with pytest.raises(PlanError, match="no finite validation loss"):
        build_plan(cfg, VOCAB, pilot_outputs=outputs)
    (Path(outputs[victim.id]) / "metrics.jsonl").unlink()
    with pytest.raises(PlanError, match="pilot metrics not found"):
        build_plan(cfg, VOCAB, pilot_outputs=outputs)
    anchor = next(j for j in stage1.jobs_of("pilot") if j.steps == 1)
    (Path(outputs[anchor.id]) / "hdee.json").write_text("{}")
    outputs[victim.id] = outputs[next(j.id for j in stage1.jobs_of("pilot") if j.steps > 1 and j.id != victim.id)]
    with pytest.raises(PlanError, match="final_val_loss"):
        build_plan(cfg, VOCAB, pilot_outputs=outputs)


def test_pilot_points_placement(tmp_path):
    rows = [
        {"step": 0, "tokens": 0, "val_loss": 5.0},
        {"step": 1, "tokens": 100, "loss": 4.9},
        {"step": 2, "tokens": 200, "loss": 4.5},
        {"step": 3, "tokens": 300, "loss": 4.2, "val_loss": 4.1},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokens, losses, seed = pilot_points(tmp_path, 100)
    assert seed == 5.0
    # train loss of step k was measured after k - 1 updates; step 1's (0 tokens) is the seed's
    assert sorted(zip(tokens, losses)) == [(100.0, 4.5), (200.0, 4.2), (300.0, 4.1)]


def test_strategy_is_registered_and_pending_without_pilots():
    cfg = _cfg()
    s = get_strategy("auto", StrategyContext(cfg=cfg, vocab=VOCAB))
    assert s.assign(None) is None
    assert len(s.pilots()) == len(LEVEL) + 2


def test_embedded_config_plans_its_pilots():
    cfg = load_config(ROOT / "configs" / "embedded.toml")
    specs = pilot_specs(cfg, 4096)
    assert len([p for p in specs if p.steps > 1]) == len(cfg.train_domains)
    spent = sum(expert_flops(cfg, 4096, p.size, p.steps) for p in specs)
    budget = budget_flops(cfg, 4096)
    assert 0.5 * cfg.auto.pilot_fraction * budget < spent <= cfg.auto.pilot_fraction * budget


def test_bad_step_choices_rejected_at_load(tmp_path):
    from hdee.core.errors import ConfigError
    from hdee.config import load_config as load

    text = (ROOT / "configs" / "tiny.toml").read_text() + "\n[auto]\nstep_choices = [0.5, 0.0]\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="auto.*step_choices must all be > 0"):
        load(bad)


def test_cli_plan_shows_the_allocation_once_pilots_ran(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from hdee.cli import app

    cfg = _cfg()
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args = ["plan", str(path), "--run-dir", str(tmp_path), "--vocab", str(VOCAB), "--no-estimate"]
    before = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert before.exit_code == 0, before.output
    assert "pending" in before.output and "predicted loss" not in before.output
    _write_pilots(tmp_path, build_plan(cfg, VOCAB))
    after = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert after.exit_code == 0, after.output
    assert "predicted loss" in after.output and "pending" not in after.output
    for lin in cfg.lineages:
        assert f"{lin.name} i{cfg.iterations} {lin.domains[-1]}:" in after.output
