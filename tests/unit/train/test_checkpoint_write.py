"""Trainer state is hashed while it is written: same files and checksums as before, nothing read back."""

import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

from hdee.core.fsutil import read_json, sha256_file, write_hashed
from hdee.model import build_model
from hdee.train import checkpoint as ckpt
from tests.helpers.train_helpers import tiny_spec


def test_write_hashed_writes_the_bytes_and_returns_their_sha256(tmp_path):
    data = os.urandom(100_003)
    digest = write_hashed(tmp_path / "f", data, chunk=4096)  # 25 blocks, the last one short
    assert (tmp_path / "f").read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()
    assert write_hashed(tmp_path / "empty", b"") == hashlib.sha256(b"").hexdigest()


def test_save_state_never_reads_its_files_back_and_keeps_the_format(tmp_path, monkeypatch):
    model = build_model(tiny_spec(tie_embeddings=True), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    model(input_ids=torch.arange(8)[None]).logits.sum().backward()
    opt.step()
    monkeypatch.setattr(ckpt, "sha256_file", lambda *a: pytest.fail("save_state re-read a file to hash it"))
    ckpt.save_state(tmp_path, model, opt, {"step": 3, "job": "j"})
    monkeypatch.undo()
    state = tmp_path / "state"
    sums = read_json(state / "checksums.json")
    assert sorted(sums) == sorted(ckpt._STATE_FILES)
    assert all(sums[name] == sha256_file(state / name) for name in ckpt._STATE_FILES)
    # the same bytes safetensors' own file writer gives
    expected = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(expected, str(tmp_path / "reference.safetensors"))
    assert (state / "model.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()
    loaded = ckpt.load_state(tmp_path)  # verifies every checksum
    assert loaded["info"]["step"] == 3
    assert all(torch.equal(loaded["model"][k], v) for k, v in expected.items())
