"""Parameter averaging of experts the real trainer made: weighted means, HF-loadable output,
architecture, weight and checksum checks, and an --out that never destroys anything else."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from hdee.cli.app import app
from hdee.ensemble import average_experts
from hdee.ensemble.experts import load_model
from hdee.core.errors import EnsembleError
from hdee.core.fsutil import sha256_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(tiny_run):
    """MHo-IHo's final experts: both size M, branched from the same seed."""
    a, b = tiny_run.final_experts("MHo-IHo")
    return a, b


def _tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_weighted_average_of_trained_experts(pair, tmp_path):
    out = average_experts(pair, [1.0, 3.0], tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    a, b = (load_model(p).state_dict() for p in pair)
    sd = merged.state_dict()
    assert sd.keys() == a.keys()
    for name, t in sd.items():
        torch.testing.assert_close(t, 0.25 * a[name] + 0.75 * b[name], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(sd["lm_head.weight"], a["lm_head.weight"])
    meta = json.loads((out / "hdee.json").read_text())
    parents = [json.loads((p / "hdee.json").read_text()) for p in pair]
    assert meta["weights"] == [0.25, 0.75] and meta["kind"] == "average"
    assert meta["sha256"] == meta["model_sha256"] == sha256_file(out / "model.safetensors")
    assert meta["tokenizer_hash"] == parents[0]["tokenizer_hash"]
    assert isinstance(parents[0]["size"], dict)  # what a trained expert records; averaging must not hash it
    assert meta["size_name"] == parents[0]["size_name"] == "M"
    assert meta["parent_sha256"] == [p["model_sha256"] for p in parents]


def test_cli_equal_weights(pair, tmp_path):
    res = CliRunner().invoke(app, ["average", *map(str, pair), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    sd = load_model(tmp_path / "m").state_dict()
    a, b = (load_model(p).state_dict() for p in pair)
    for name in ("model.norm.weight", "model.embed_tokens.weight"):
        torch.testing.assert_close(sd[name], (a[name] + b[name]) / 2)


def test_mismatched_architecture_is_one_line_error_and_output_untouched(pair, tiny_run, tmp_path):
    small = tiny_run.seed("S")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output")
    with pytest.raises(EnsembleError) as err:
        average_experts([pair[0], small], None, out, force=True)
    assert "\n" not in str(err.value) and "intermediate_size" in str(err.value) and str(small) in str(err.value)
    assert (out / "keep.txt").read_text() == "earlier output"


@pytest.mark.parametrize("weights, match", [([1.0], "1 averaging weights for 2"), ([-1.0, 2.0], "non-negative"),
                                            ([0.0, 0.0], "positive sum")])
def test_bad_weights(pair, tmp_path, weights, match):
    with pytest.raises(EnsembleError, match=match):
        average_experts(pair, weights, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_refuses_an_output_that_holds_or_is_an_input(pair, tmp_path):
    with pytest.raises(EnsembleError, match="overwrite one of the averaged experts"):
        average_experts(pair, None, pair[0], force=True)
    with pytest.raises(EnsembleError, match="overwrite one of the averaged experts"):
        average_experts(pair, None, pair[0].parent, force=True)  # the experts/ dir that holds both


def test_existing_out_is_replaced_only_when_it_is_the_same_average_or_forced(pair, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(EnsembleError, match="already exists and is not an earlier average of these experts"):
        average_experts(pair, None, out)
    assert _tree(out) == {out.joinpath("notes.txt").relative_to(out): b"mine"}

    shutil.rmtree(out)
    average_experts(pair, [1.0, 1.0], out)
    first = _tree(out)
    average_experts(pair, [2.0, 2.0], out)  # the same normalised weights: an earlier average of the same inputs
    assert _tree(out) == first
    with pytest.raises(EnsembleError, match="already exists"):
        average_experts(pair, [1.0, 3.0], out)
    assert _tree(out) == first
    average_experts(pair, [1.0, 3.0], out, force=True)
    assert json.loads((out / "hdee.json").read_text())["weights"] == [0.25, 0.75]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_weights_are_refused(pair, tmp_path, damage):
    bad = tmp_path / "bad"
    shutil.copytree(pair[1], bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    with pytest.raises(EnsembleError, match="checksum does not match hdee.json") as err:
        average_experts([pair[0], bad], None, tmp_path / "m")
    assert str(weights) in str(err.value) and not (tmp_path / "m").exists()


def test_mismatched_tensors_are_caught_even_with_equal_configs(pair, tmp_path):
    from safetensors.torch import load_file, save_file

    odd = tmp_path / "odd"
    shutil.copytree(pair[1], odd)
    sd = load_file(odd / "model.safetensors")
    sd["model.norm.weight"] = sd["model.norm.weight"][:-1].clone()
    save_file(sd, odd / "model.safetensors", metadata={"format": "pt"})
    meta = json.loads((odd / "hdee.json").read_text())
    meta["model_sha256"] = sha256_file(odd / "model.safetensors")  # a consistent, but different, expert
    (odd / "hdee.json").write_text(json.dumps(meta))
    with pytest.raises(EnsembleError, match="tensor model.norm.weight"):
        average_experts([pair[0], odd], None, tmp_path / "m")
