import errno
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hdee.core.errors import CheckpointError, DataError, TrainingError
from hdee.core.fsutil import sha256_file
from hdee.train import Budget, run_train_job
from hdee.train import checkpoint as ckpt
from hdee.train import loop
from hdee.train import loss as train_loss
from hdee.train.job import plan_steps
from hdee.expert_dir import read_metrics
from tests.helpers.train_helpers import SEQ, TOKHASH, make_domain, tiny_job

torch.set_num_threads(1)


@pytest.fixture
def domains(tmp_path):
    return [make_domain(tmp_path / "data", "alpha", 1), make_domain(tmp_path / "data", "beta", 2)]


@pytest.mark.slow
def test_job_writes_a_loadable_expert_with_its_record(tmp_path, domains):
    rows = []
    job = tiny_job(tmp_path / "exp", domains, steps=6)
    record = run_train_job(job, progress=rows.append)
    out = tmp_path / "exp"
    assert record == json.loads((out / "hdee.json").read_text())
    assert record["steps"] == 6 and record["tokens"] == 6 * 4 * SEQ
    assert record["flops"] == pytest.approx(6 * record["params"]["non_embedding"] * record["tokens"])
    assert record["flops_full"] > record["flops"]
    assert record["model_sha256"] == sha256_file(out / "model.safetensors")
    assert record["parent"] is None and record["tokenizer_hash"] == TOKHASH
    assert [d["manifest_sha256"] for d in record["data"]] == [sha256_file(d / "manifest.json") for d in domains]
    assert (record["domain"], record["lineage"], record["iteration"]) == ("alpha", "l0", 1)
    assert not (out / "state").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == record["params"]["total"]
    metrics = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == list(range(7))
    assert [r["step"] for r in metrics if r.get("val_loss") is not None] == [0, 3, 6]
    assert metrics[-1]["val_loss"] == record["final_val_loss"]
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"]  # it learns the pattern
    assert [r["step"] for r in rows] == list(range(1, 7)) and all("loss" in r for r in rows)
    # warmup 2 steps, then cosine to min_lr over this job's own steps
    assert [round(r["lr"], 6) for r in metrics[1:3]] == [0.0015, 0.003]
    assert metrics[-1]["lr"] > 3e-4 and metrics[-1]["lr"] < metrics[3]["lr"]


@pytest.mark.slow
def test_finished_job_returns_at_once_and_branches_load_the_parent(tmp_path, domains, monkeypatch):
    parent = tmp_path / "seed"
    first = run_train_job(tiny_job(parent, domains, steps=2))
    stamp = os.stat(parent / "model.safetensors").st_mtime_ns
    monkeypatch.setattr(loop, "_train_step", lambda *a, **k: pytest.fail("a finished job must not train"))
    assert run_train_job(tiny_job(parent, domains, steps=2)) == first
    assert os.stat(parent / "model.safetensors").st_mtime_ns == stamp
    monkeypatch.undo()
    child = run_train_job(tiny_job(tmp_path / "child", domains[:1], steps=2, parent=parent, val=domains))
    assert child["parent"] == {"path": str(parent), "model_sha256": first["model_sha256"]}
    # a branch starts from the parent's weights: its step-0 validation is the parent's final one
    rows = read_metrics(tmp_path / "child" / "metrics.jsonl")
    assert rows[0]["val_loss"] == first["final_val_loss"]
    assert child["final_val_loss"] != first["final_val_loss"]


def test_budget_in_tokens_or_flops_derives_steps(tmp_path, domains):
    per_step_tokens = 4 * SEQ
    job = tiny_job(tmp_path / "e", domains, budget=Budget(tokens=5 * per_step_tokens + 3))
    assert plan_steps(job).steps == 5
    flops_step = plan_steps(job).flops_per_step
    job = tiny_job(tmp_path / "e", domains, budget=Budget(flops=3.5 * flops_step))
    assert plan_steps(job).steps == 3
    with pytest.raises(TrainingError, match="budget too small for one step"):
        run_train_job(tiny_job(tmp_path / "e", domains, budget=Budget(tokens=per_step_tokens - 1)))
    with pytest.raises(ValueError):
        Budget(steps=1, tokens=10)
    assert not (tmp_path / "e").exists()


def test_accumulation_is_derived_and_keeps_the_global_batch(tmp_path, domains):
    job = tiny_job(tmp_path / "e", domains, train={"batch_tokens": 12 * SEQ, "micro_batch_tokens": 5 * SEQ})
    p = plan_steps(job)
    assert (p.batch_seqs, p.micro_seqs, p.accum) == (12, 4, 3)
    p2 = plan_steps(job, world_size=2)
    assert (p2.batch_seqs, p2.rank_seqs, p2.micro_seqs * p2.accum) == (12, 6, 6)
    with pytest.raises(TrainingError, match="cannot be split"):
        plan_steps(job, world_size=5)


@pytest.mark.slow
def test_state_is_checksummed_safetensors_and_json(tmp_path, domains, monkeypatch):
    out = tmp_path / "exp"

    def stop(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train_job(tiny_job(out, domains, steps=6), progress=stop)
    state = out / "state"
    assert sorted(p.name for p in state.iterdir()) == sorted([*ckpt._STATE_FILES, "checksums.json"])
    info = json.loads((state / "state.json").read_text())
    assert info["step"] == 4 and info["sampler"]["drawn"] == [8, 8]
    model = load_file(state / "model.safetensors")
    opt = load_file(state / "optimizer.safetensors")
    assert set(model) and all(k.split(".", 1)[1] in {"step", "exp_avg", "exp_avg_sq"} for k in opt)
    loaded = ckpt.load_state(out)
    assert loaded["info"]["step"] == 4
    with pytest.raises(CheckpointError, match="different job"):
        run_train_job(tiny_job(out, domains, steps=7))
    # a flipped byte is caught
    blob = bytearray((state / "optimizer.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (state / "optimizer.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        run_train_job(tiny_job(out, domains, steps=6))


@pytest.mark.slow
def test_parent_missing_corrupt_or_other_shape(tmp_path, domains):
    with pytest.raises(CheckpointError, match="not found"):
        run_train_job(tiny_job(tmp_path / "c", domains, parent=tmp_path / "nope"))
    parent = tmp_path / "p"
    run_train_job(tiny_job(parent, domains, steps=1))
    with pytest.raises(CheckpointError, match="the job's size"):
        run_train_job(tiny_job(tmp_path / "c", domains, parent=parent, size=tiny_job(parent, domains).size.model_copy(update={"intermediate": 96})))
    blob = bytearray((parent / "model.safetensors").read_bytes())
    blob[-5] ^= 0x01
    (parent / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        run_train_job(tiny_job(tmp_path / "c", domains, parent=parent))
    # the same corruption makes the finished job itself refuse to be reused
    with pytest.raises(CheckpointError, match="checksum does not match"):
        run_train_job(tiny_job(parent, domains, steps=1))
    assert not (tmp_path / "c" / "hdee.json").exists()


def test_tokenizer_and_vocab_mismatches(tmp_path):
    other = make_domain(tmp_path / "data", "other", 3, tokenizer_hash="another-tokenizer")
    with pytest.raises(DataError, match="tokenizer hash"):
        run_train_job(tiny_job(tmp_path / "e", [other]))
    big = make_domain(tmp_path / "data", "big", 4, vocab_size=1000)
    with pytest.raises(DataError, match="larger than the model's vocab"):
        run_train_job(tiny_job(tmp_path / "e", [big]))
    wild = make_domain(tmp_path / "data", "wild", 5)
    np.full(4000, 300, dtype="<u2").tofile(wild / "train.bin")  # ids the manifest vocab does not allow
    manifest = json.loads((wild / "manifest.json").read_text())
    manifest["splits"]["train"]["sha256"] = sha256_file(wild / "train.bin")  # recorded as if prepare wrote them
    (wild / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="token id 300"):
        run_train_job(tiny_job(tmp_path / "e", [wild]))
    tiny = make_domain(tmp_path / "data", "tiny", 6, n_train=20)
    with pytest.raises(DataError, match="fewer than two windows"):
        run_train_job(tiny_job(tmp_path / "e", [tiny]))
    with pytest.raises(DataError, match="domain directory not found"):
        run_train_job(tiny_job(tmp_path / "e", [tmp_path / "missing"]))


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, domains, monkeypatch):
    real = train_loss.compute_loss
    calls = {"n": 0}

    def poisoned(model, windows):
        loss = real(model, windows)
        if model.training:
            calls["n"] += 1
            if calls["n"] > 2 * 5:  # 2 micro-batches per step: step 6 goes bad
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_loss, "compute_loss", poisoned)
    out = tmp_path / "exp"
    with pytest.raises(TrainingError, match=r"loss became nan at step 6; .*last good checkpoint is step 4"):
        run_train_job(tiny_job(out, domains, steps=8))
    assert ckpt.load_state(out)["info"]["step"] == 4
    assert not (out / "hdee.json").exists()


@pytest.mark.slow
def test_out_of_disk_keeps_the_previous_checkpoint(tmp_path, domains, monkeypatch):
    out = tmp_path / "exp"
    real_write = ckpt.write_hashed
    writes = {"n": 0}

    def full_disk(path, data, *a, **k):
        writes["n"] += 1
        if writes["n"] > 4:  # the first state (4 files) fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data, *a, **k)

    monkeypatch.setattr(ckpt, "write_hashed", full_disk)
    with pytest.raises(CheckpointError, match="no space left on device while saving; the checkpoint of step 2 is kept"):
        run_train_job(tiny_job(out, domains, steps=6))
    monkeypatch.undo()
    assert ckpt.load_state(out)["info"]["step"] == 2
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    record = run_train_job(tiny_job(out, domains, steps=6))  # resumes and finishes
    assert record["steps"] == 6
