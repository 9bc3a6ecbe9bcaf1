"""The micro batch comes from the config's memory budget (never from the card), and new settings keep old ids."""

import pytest
import torch

from hdee.config import TrainConfig
from hdee.core.errors import TrainingError
from hdee.model import SizeSpec
from hdee.train.job import plan_steps
from hdee.train.memory import GIB, estimate_bytes, micro_tokens_for_budget
from tests.helpers.train_helpers import SEQ, tiny_job, tiny_spec

PAPER_M = SizeSpec(name="M", vocab=128002, hidden=768, layers=12, heads=12, kv_heads=12, intermediate=3072, seq_len=1024)


def test_the_paper_expert_fits_80_gib_only_without_the_full_logits():
    # the paper config's own micro batch: 20.5 GiB of fp32 logits alone made the plain loss run out
    assert estimate_bytes(PAPER_M, 43_008, "plain") > 80 * GIB
    assert estimate_bytes(PAPER_M, 43_008, "chunked") < 60 * GIB
    assert estimate_bytes(PAPER_M, 43_008, "fused") == estimate_bytes(PAPER_M, 43_008, "chunked")


def test_budget_gives_the_largest_whole_sequence_micro_batch_that_fits():
    for loss in ("plain", "chunked"):
        tokens = micro_tokens_for_budget(PAPER_M, 40, loss)
        assert tokens % 1024 == 0 and tokens > 0
        assert estimate_bytes(PAPER_M, tokens, loss) <= 40 * GIB < estimate_bytes(PAPER_M, tokens + 1024, loss)
    assert micro_tokens_for_budget(PAPER_M, 40, "chunked") > 2 * micro_tokens_for_budget(PAPER_M, 40, "plain")
    assert micro_tokens_for_budget(PAPER_M, 72, "chunked") > micro_tokens_for_budget(PAPER_M, 40, "chunked")
    assert micro_tokens_for_budget(PAPER_M, 1, "chunked") == 0  # the weights and optimizer alone need 3.2 GiB


def test_left_out_micro_batch_is_derived_from_the_config_not_the_card(tmp_path, monkeypatch):
    size = tiny_spec(vocab=50_000, seq_len=SEQ)
    job = tiny_job(tmp_path / "e", [tmp_path], size=size, train={"batch_tokens": 360 * SEQ, "micro_batch_tokens": None, "memory_gib": 1.0})
    plan = plan_steps(job)
    want = micro_tokens_for_budget(size, 1.0, "plain") // SEQ
    assert 1 < want < 360
    assert plan.micro_seqs * plan.accum == 360 and plan.micro_seqs <= want and 360 % plan.micro_seqs == 0
    assert plan.micro_seqs == max(d for d in range(1, want + 1) if 360 % d == 0)
    # nothing about the machine enters: a card with other free memory gives the same plan
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (1 << 40, 1 << 40))
    assert plan_steps(job) == plan
    chunked = plan_steps(tiny_job(tmp_path / "e", [tmp_path], size=size,
                                  train={"batch_tokens": 360 * SEQ, "micro_batch_tokens": None, "memory_gib": 1.0, "loss": "chunked"}))
    assert chunked.micro_seqs > plan.micro_seqs
    # an explicit micro batch wins over the budget
    fixed = tiny_job(tmp_path / "e", [tmp_path], size=size, train={"batch_tokens": 360 * SEQ, "micro_batch_tokens": 4 * SEQ, "memory_gib": 1.0})
    assert plan_steps(fixed).micro_seqs == 4


def test_a_budget_below_one_sequence_is_one_line(tmp_path):
    job = tiny_job(tmp_path / "e", [tmp_path], size=PAPER_M, train={"batch_tokens": 4096, "micro_batch_tokens": None, "memory_gib": 2.0})
    with pytest.raises(TrainingError, match=r"train.memory_gib 2 is too small for one sequence of 1024 tokens of size M \(about \d+\.\d GiB") as exc:
        plan_steps(job)
    assert "\n" not in str(exc.value)


def test_new_training_settings_stay_out_of_dumps_at_their_defaults():
    """Job ids hash the train section: configs that do not use the new settings keep their ids."""
    default = TrainConfig()
    assert "loss" not in default.model_dump(mode="json") and "memory_gib" not in default.model_dump_json()
    custom = TrainConfig(loss="chunked", memory_gib=70)
    dumped = custom.model_dump(mode="json")
    assert dumped["loss"] == "chunked" and dumped["memory_gib"] == 70
    assert TrainConfig.model_validate_json(custom.model_dump_json()) == custom
    assert TrainConfig.model_validate(default.model_dump()) == default
