"""The domain phase in the paper's proportions: its peak lr against the seeds', a warm-up, and the
seed tokens per expert-iteration that `hdee plan` reports."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tests.helpers.cli_helpers import cli_error
from hdee.budget import seed_proportions
from hdee.cli.app import app
from hdee.config import ExperimentConfig, load_config
from hdee.model import build_model, size_spec

from tests.helpers.paths import CONFIGS


def _with_budget(cfg: ExperimentConfig, **schedule) -> dict:
    raw = cfg.model_dump(mode="json")
    raw["budget"]["max_lr_vs_seed"] = 0.1
    raw["budget"]["schedule"].update(schedule)
    return raw


def test_a_domain_phase_above_a_tenth_of_the_seed_lr_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"budget.schedule.lr 0.001 is 0.333x the seed models' peak 0.003, above budget.max_lr_vs_seed 0.1"):
        ExperimentConfig.model_validate(_with_budget(tiny))
    with pytest.raises(ValueError, match="budget.schedule.warmup is 0"):
        ExperimentConfig.model_validate(_with_budget(tiny, lr=3e-4, warmup=0))
    ok = ExperimentConfig.model_validate(_with_budget(tiny, lr=3e-4, warmup=1))
    assert ok.budget.max_lr_vs_seed == 0.1
    assert "max_lr_vs_seed" not in tiny.model_dump(mode="json")["budget"]  # configs without it hash as before
    # through the CLI: one line naming the file and the setting, exit 2
    path = tmp_path / "hot.toml"
    path.write_text((CONFIGS / "tiny.toml").read_text().replace('[budget]\n', '[budget]\nmax_lr_vs_seed = 0.1\n'))
    res = CliRunner().invoke(app, ["plan", str(path), "--vocab", "512"])
    assert re.search(r"hot\.toml: .*above budget\.max_lr_vs_seed 0\.1", cli_error(res))


def test_seed_proportions_count_tokens_per_iteration_and_per_parameter():
    cfg = load_config(CONFIGS / "regime.toml")
    p = seed_proportions(cfg, 2048, 6_600_704)
    assert p["per_iteration"] == pytest.approx(6_600_704 / (50 * 2048))
    for size in ("S", "M", "L"):
        model = build_model(size_spec(cfg, size, 2048), seed=0)
        non_embedding = sum(t.numel() for n, t in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
        assert p[f"per_param_{size}"] == pytest.approx(6_600_704 / non_embedding)
    assert 14 < p["per_param_M"] < 16 and p["per_iteration"] >= 30


def test_plan_reports_the_seed_proportions_of_the_regime_config(monkeypatch, tmp_path):
    monkeypatch.setenv("HDEE_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["plan", str(CONFIGS / "regime.toml"), "--vocab", "2048", "--run-dir", "/nonexistent-run"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "seed models: 4,194,304 tokens each = 41.0:1 seed tokens per expert-iteration" in text
    assert "tokens per non-embedding parameter: XS 25.2, S 11.6, M 9.5, L 8.0, XL 5.8" in text
    assert "domain-phase peak lr 0.0003 = 0.1x the seeds' 0.003" in text
    assert f"seed cache: 0 of 5 built in {tmp_path / 'cache' / 'seeds'} (hdee seeds builds them)" in text
