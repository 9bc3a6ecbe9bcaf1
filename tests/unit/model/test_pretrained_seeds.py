"""Bring your own seeds: `seed_models.from` takes HF checkpoints of one family (tiny Llama / GPT-NeoX saved locally)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from tests.helpers.cli_helpers import cli_error
from hdee.cli.app import app
from hdee.config import ExperimentConfig
from hdee.data.tokenizer import save_tokenizer, save_tokenizer_files, train_bpe
from hdee.core.errors import ConfigError, PlanError
from hdee.core.layout import RunLayout
from hdee.plan import build_plan
from tests.helpers.run_fixture import CORPUS

torch.set_num_threads(1)
VOCAB = 304  # the tokenizer has 300; checkpoints often pad their tables
SHAPES = {"S": (32, 2, 64), "M": (48, 2, 96), "L": (64, 3, 128)}  # hidden, layers, MLP: one family, three sizes


def _checkpoint(path, arch: str, size: str, tokenizer):
    hidden, layers, mlp = SHAPES[size]
    torch.manual_seed(len(size) + layers)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                                             num_key_value_heads=2, intermediate_size=mlp, max_position_embeddings=64))
    else:
        model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                                                 intermediate_size=mlp, max_position_embeddings=64))
    model.save_pretrained(path)
    save_tokenizer_files(tokenizer, path)
    return path


def _non_embedding(model: torch.nn.Module) -> int:
    """Counted by parameter name, independently of hdee's accounting."""
    skip = ("embed_tokens", "lm_head", "embed_in", "embed_out")
    return sum(p.numel() for n, p in model.named_parameters() if not any(s in n for s in skip))


def _config(root, arch: str, strategies: list[str]) -> ExperimentConfig:
    tok = root / "tokenizer.json"
    if not tok.exists():
        save_tokenizer(train_bpe(CORPUS * 50, 300), tok)
    seeds = {s: str(_checkpoint(root / arch / s, arch, s, tok)) for s in SHAPES if not (root / arch / s).exists()} or {
        s: str(root / arch / s) for s in SHAPES}
    domains = []
    for i, name in enumerate(["a1", "a2", "b1", "b2", "held"]):
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": CORPUS[(i + j) % 4] * (1 + j % 3)}) + "\n" for j in range(300)))
        domains.append({"name": name, "role": "heldout" if name == "held" else "train", "source": {"kind": "files", "paths": [str(path)]}})
    return ExperimentConfig.model_validate({
        "name": f"byo-{arch}", "strategies": strategies, "domains": domains,
        # every document repeats the same four lines, so the one-way de-duplication would empty val and test
        "data": {"seq_len": 16, "max_train_tokens": 3000, "max_eval_tokens": 256, "tokenizer": {"kind": "pretrained", "path": seeds["S"]},
                 "dedup": {"exact": False, "near": 0, "contained": 0}},
        "train": {"batch_tokens": 64, "eval_every": 2, "eval_tokens": 128, "checkpoint_every": 2},
        "seed_models": {"from": seeds},
        "budget": {"baseline": {"size": "M", "steps": 4}, "sizes": {"easy": "S", "hard": "L"}, "steps": {"easy": 3, "hard": 5},
                   "vary_steps_in": "all", "tolerance": 0.3, "schedule": {"lr": 1e-3, "min_lr": 1e-4, "warmup": 1}},
        "lineages": [{"name": "easy", "tier": "easy", "domains": ["a1", "a2"]}, {"name": "hard", "tier": "hard", "domains": ["b1", "b2"]}],
        "eval": {"batch_size": 8, "prior_sequences": 2, "product_windows": 2},
    })


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_plan_counts_domain_flops_from_the_checkpoints_real_shapes(tmp_path, arch):
    cfg = _config(tmp_path, arch, ["MHo-IHo", "MHe-IHe"])
    assert "model" not in cfg.model_dump(mode="json") and cfg.size_names == ["S", "M", "L"]
    plan = build_plan(cfg, 300)
    for job in plan.jobs_of("train"):
        real = _non_embedding(AutoModelForCausalLM.from_pretrained(tmp_path / arch / str(job.size)))
        assert job.flops_by["paper"] == 6 * real * job.steps * cfg.train.batch_tokens
        assert job.flops == job.flops_by[cfg.budget.flops] and job.flops_by["hardware"] > job.flops_by["paper"]
    seeds = plan.jobs_of("seed")
    assert {j.size for j in seeds} == {"S", "M", "L"} and all(j.flops == 0 for j in seeds)
    assert plan.ensembles["MHe-IHe"].seed_flops == 0
    # S and L of a real family need not average to M: equal steps then miss the budget, and the plan says so
    with pytest.raises(PlanError, match="'MHe-IHo' spends .* off the baseline's"):
        build_plan(cfg.model_copy(update={"strategies": ["MHe-IHo"]}), 300)


def test_config_rules_for_checkpoint_seeds(tmp_path):
    cfg = _config(tmp_path, "llama", ["MHo-IHo"])
    raw = cfg.model_dump(mode="json")
    assert raw["seed_models"]["from"]["S"].endswith("/llama/S")
    assert ExperimentConfig.model_validate(raw) == cfg  # the run dir's snapshot reloads
    for change, match in (
        ({"model": {"hidden": 8, "layers": 1, "heads": 1, "intermediate": {"M": 8}}}, "exactly one of \\[model\\]"),
        ({"data": {**raw["data"], "tokenizer": {"kind": "bpe"}}}, "needs the checkpoints' tokenizer"),
        ({"seed_models": {**raw["seed_models"], "tokens": 100}}, "drop tokens and flops"),
    ):
        with pytest.raises(ValueError, match=match):
            ExperimentConfig.model_validate({**raw, **change})
    missing = {**raw, "seed_models": {"from": {**raw["seed_models"]["from"], "M": str(tmp_path / "nowhere")}}}
    with pytest.raises(ConfigError, match="seed_models.from.M = .*nowhere.*cannot read its config"):
        build_plan(ExperimentConfig.model_validate(missing), 300)


@pytest.mark.slow
def test_experiment_branches_gpt_neox_experts_from_imported_seeds(tmp_path):
    from hdee.pipeline.experiment import run_experiment

    cfg = _config(tmp_path, "gpt_neox", ["MHo-IHo", "MHe-IHe", "dense"])
    layout = RunLayout(tmp_path / "run")
    run_experiment(cfg, layout, backend="local", workers=2, view=False)
    plan = json.loads(layout.plan_json.read_text())
    seed_m = next(j for j in plan["jobs"] if j["kind"] == "seed" and j["size"] == "M")
    record = json.loads((layout.expert_dir(seed_m["id"]) / "hdee.json").read_text())
    assert record["source"] == cfg.seed_models.from_["M"] and record["flops"] == 0 and record["final_val_loss"] > 0
    source = load_file(str(tmp_path / "gpt_neox" / "M" / "model.safetensors"))
    copied = load_file(str(layout.expert_dir(seed_m["id"]) / "model.safetensors"))
    assert all(torch.equal(source[k], copied[k]) for k in source)  # imported as it was
    results = json.loads(layout.results_json.read_text())
    assert set(results["ensembles"]) == {"MHo-IHo", "MHe-IHe", "dense"}
    for job in (j for j in plan["jobs"] if j["kind"] in ("train", "dense")):
        expert = AutoModelForCausalLM.from_pretrained(layout.expert_dir(job["id"]))
        assert expert.config.model_type == "gpt_neox"
        rec = json.loads((layout.expert_dir(job["id"]) / "hdee.json").read_text())
        assert rec["flops"] == job["flops_by"]["paper"] == 6 * _non_embedding(expert) * rec["tokens"]
        assert rec["flops_full"] == pytest.approx(job["flops_by"]["hardware"])
    for name, ens in plan["ensembles"].items():
        assert ens["seed_flops"] == 0
        assert abs(ens["domain_flops"] / plan["budget_flops"] - 1) <= cfg.budget.tolerance


def test_seed_model_repeats_refuse_imported_seeds(tmp_path):
    from hdee.pipeline.experiment import run_experiment

    cfg = _config(tmp_path, "llama", ["MHo-IHo"])
    assert build_plan(cfg, 300, repeat=1).jobs_of("seed") == build_plan(cfg, 300).jobs_of("seed")  # shared, as imported
    assert build_plan(cfg, 300, vary="seed-models").jobs  # repeat 0 is the same either way
    with pytest.raises(ConfigError, match="--vary seed-models retrains the seed models, but this config imports them") as exc:
        build_plan(cfg, 300, repeat=1, vary="seed-models")
    assert "\n" not in str(exc.value)
    layout = RunLayout(tmp_path / "run")
    with pytest.raises(ConfigError, match="imports them"):
        run_experiment(cfg, layout, backend="local", workers=1, seeds=2, vary="seed-models", view=False)
    assert not layout.root.exists()  # refused before anything was written

    # the command line refuses it before its run-dir lock creates the directory
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True, exclude_unset=True)))
    res = CliRunner().invoke(app, ["run", str(path), "--run-dir", str(layout.root), "--seeds", "2", "--vary", "seed-models"])
    assert "imports them" in cli_error(res)
    assert not layout.root.exists()
