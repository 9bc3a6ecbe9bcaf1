"""budget.tiers = "measured": shared pilots measure each lineage's return, the tiers are dealt by it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdee.config import ExperimentConfig
from hdee.plan import build_plan

VOCAB = 512
STRATS = ["MHo-IHo", "MHo-IHe", "MHe-IHo", "placebo"]


def _cfg(tiny, tiers="measured"):
    raw = tiny.model_dump(mode="json")
    raw["strategies"] = STRATS
    raw["budget"].update(baseline={"size": "M", "steps": 40}, steps={"easy": 30, "hard": 50}, tiers=tiers)
    return ExperimentConfig.model_validate(raw)


def _write_pilots(tmp: Path, plan, speed: dict[str, float], tps: int) -> dict[str, str]:
    """Finished pilot dirs whose losses fall at `speed[domain]`: the measured return."""
    out = {}
    for job in plan.jobs_of("pilot"):
        d = tmp / job.id
        d.mkdir(parents=True)
        rate = speed[job.domain]

        def loss(t: float, rate: float = rate) -> float:
            return 4.0 + rate * (1 + t / tps) ** -0.5

        rows = [{"step": 0, "tokens": 0, "val_loss": loss(0)}]
        rows += [{"step": k, "tokens": k * tps, "loss": loss((k - 1) * tps)} for k in range(1, job.steps + 1)]
        rows[-1]["val_loss"] = loss(job.steps * tps)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "hdee.json").write_text(json.dumps({"steps": job.steps}))
        out[job.id] = str(d)
    return out


def test_measured_tiers_plan_in_two_stages_with_shared_pilots(tiny, tmp_path):
    cfg = _cfg(tiny)
    stage1 = build_plan(cfg, VOCAB)
    assert set(stage1.pending) == {"MHo-IHe", "MHe-IHo", "placebo"}
    pilots = stage1.jobs_of("pilot")
    assert len(pilots) == 4 and all(set(j.used_by) == {"MHo-IHe", "MHe-IHo", "placebo"} for j in pilots)  # one job each
    # the easy lineage's domains still fall fast, the hard lineage's are saturated: the measurement swaps the tiers
    speed = {"py_code": 2.0, "pydoc_topics": 1.5, "py_docstrings": 0.02, "c_headers": 0.01}
    plan = build_plan(cfg, VOCAB, pilot_outputs=_write_pilots(tmp_path, stage1, speed, cfg.train.batch_tokens))
    assert plan.complete
    sizes = {s: {j.lineage: j.size for j in plan.jobs if j.kind == "train" and s in j.used_by} for s in STRATS}
    assert sizes["MHe-IHo"] == {"easy": "L", "hard": "S"}
    assert sizes["placebo"] == {"easy": "S", "hard": "L"}  # the placebo mirrors the measured tiers
    decision = plan.ensembles["MHe-IHo"].decision
    assert decision["dealt"] == {"easy": "hard", "hard": "easy"} and decision["hand"] == {"easy": "easy", "hard": "hard"}
    assert decision["returns"]["easy"] > decision["returns"]["hard"] > 0
    base = plan.ensembles["MHo-IHo"].domain_flops
    pilot_flops = sum(j.flops for j in pilots)
    for s in STRATS[1:]:  # each pays for the pilots from its own domain phase
        e = plan.ensembles[s]
        assert abs(e.domain_flops / base - 1) <= cfg.budget.tolerance, s
        experts = sum(plan.job(j).flops for j in e.members["all"])
        assert experts == pytest.approx(e.domain_flops - pilot_flops)


def test_hand_tiers_are_the_default_and_unchanged(tiny):
    assert "tiers" not in tiny.model_dump(mode="json")["budget"]
    hand = build_plan(_cfg(tiny, "hand"), VOCAB)
    assert hand.complete and not hand.jobs_of("pilot")
    sizes = {j.lineage: j.size for j in hand.jobs if j.kind == "train" and "MHe-IHo" in j.used_by}
    assert sizes == {"easy": "S", "hard": "L"}


def test_the_plan_line_says_how_the_tiers_were_dealt():
    from hdee.strategies.measured import describe_tiers

    decision = {"tiers": "measured", "hand": {"easy": "easy", "hard": "hard"}, "dealt": {"easy": "hard", "hard": "easy"},
                "returns": {"easy": 0.25, "hard": 0.01}}
    assert describe_tiers(decision) == [
        "tiers from the pilots' measured returns (hand-set -> measured): easy easy -> hard (return 0.2500), "
        "hard hard -> easy (return 0.0100)"]
    assert describe_tiers({"objective": "mean"}) == []
