"""Parameter averaging: weighted means, HF-loadable output, architecture and weight checks."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from experts import make_expert
from hdee.cli.app import app
from hdee.ensemble import average_experts
from hdee.ensemble.experts import load_model
from hdee.errors import EnsembleError
from hdee.fsutil import sha256_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("avg")
    return make_expert(root / "a", 1, scale=5), make_expert(root / "b", 2, scale=5)


def test_weighted_average_loads_and_equals_weighted_mean(pair, tmp_path):
    out = average_experts(pair, [1.0, 3.0], tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    a, b = (load_model(p).state_dict() for p in pair)
    sd = merged.state_dict()
    assert sd.keys() == a.keys()
    for name, t in sd.items():
        torch.testing.assert_close(t, 0.25 * a[name] + 0.75 * b[name], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(sd["lm_head.weight"], a["lm_head.weight"])
    meta = json.loads((out / "hdee.json").read_text())
    assert meta["weights"] == [0.25, 0.75] and meta["kind"] == "average"
    assert meta["sha256"] == meta["model_sha256"] == sha256_file(out / "model.safetensors") and meta["tokenizer_hash"] == "tok-a"


def test_equal_weights_by_default_and_cli(pair, tmp_path):
    res = CliRunner().invoke(app, ["average", *map(str, pair), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    sd = load_model(tmp_path / "m").state_dict()
    a, b = (load_model(p).state_dict() for p in pair)
    torch.testing.assert_close(sd["model.norm.weight"], (a["model.norm.weight"] + b["model.norm.weight"]) / 2)
    torch.testing.assert_close(sd["model.embed_tokens.weight"], (a["model.embed_tokens.weight"] + b["model.embed_tokens.weight"]) / 2)


def test_mismatched_architecture_is_one_line_error_and_output_untouched(pair, tmp_path):
    other = make_expert(tmp_path / "wide", 3, intermediate=80)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output")
    with pytest.raises(EnsembleError) as err:
        average_experts([pair[0], other], None, out)
    assert "\n" not in str(err.value) and "intermediate_size" in str(err.value) and str(other) in str(err.value)
    assert (out / "keep.txt").read_text() == "earlier output"


@pytest.mark.parametrize("weights, match", [([1.0], "1 averaging weights for 2"), ([-1.0, 2.0], "non-negative"),
                                            ([0.0, 0.0], "positive sum")])
def test_bad_weights(pair, tmp_path, weights, match):
    with pytest.raises(EnsembleError, match=match):
        average_experts(pair, weights, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_an_input_and_cli_bad_weights(pair, tmp_path):
    with pytest.raises(EnsembleError, match="overwrite"):
        average_experts(pair, None, pair[0])
    res = CliRunner().invoke(app, ["average", *map(str, pair), "--out", str(tmp_path / "m"), "--weights", "a,b"])
    assert isinstance(res.exception, EnsembleError)


def test_mismatched_tensors_are_caught_even_with_equal_configs(pair, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    odd = tmp_path / "odd"
    shutil.copytree(pair[1], odd)
    sd = load_file(odd / "model.safetensors")
    sd["model.norm.weight"] = sd["model.norm.weight"][:-1].clone()
    save_file(sd, odd / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(EnsembleError, match="tensor model.norm.weight"):
        average_experts([pair[0], odd], None, tmp_path / "m")
