"""Every model directory hdee writes is self-contained: tokenizer files and a model card beside the weights."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, pipeline

from hdee.data.tokenizer import load_tokenizer, save_tokenizer, train_bpe
from hdee.ensemble import average_experts
from hdee.core.fsutil import sha256_file
from hdee.train import run_train_job
from tests.helpers.train_helpers import make_domain, tiny_job, tiny_spec

pytestmark = pytest.mark.slow  # every test reads the experts `trained` trains
torch.set_num_threads(1)
TEXT = ["def f(x):\n    return x + 1\n", "the quick brown fox jumps over the lazy dog. " * 3, "import os\nprint(os.sep)\n"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("selfcontained")
    tok_path = root / "tokenizer.json"
    save_tokenizer(train_bpe(TEXT * 20, 300), tok_path)
    domains = [make_domain(root / "data", "alpha", 1), make_domain(root / "data", "beta", 2)]
    spec = tiny_spec(vocab=300)
    seed = run_train_job(tiny_job(root / "seed-M", domains, steps=2, size=spec, tokenizer=tok_path,
                                  meta={"kind": "seed", "config": "tiny", "domains": ["alpha", "beta"]}), progress=False)
    experts = []
    for i, dom in enumerate(domains):
        out = root / f"train-{dom.name}"
        run_train_job(tiny_job(out, [dom], steps=2, size=spec, parent=root / "seed-M", tokenizer=tok_path, seed=i,
                               meta={"kind": "train", "lineage": dom.name, "iteration": 1, "domain": dom.name,
                                     "domains": [dom.name], "parent_id": "seed-M", "config": "tiny"}), progress=False)
        experts.append(out)
    return tok_path, root / "seed-M", experts, seed


def test_every_trained_dir_holds_the_run_tokenizer_and_a_card(trained):
    tok_path, seed_dir, experts, _ = trained
    for d in (seed_dir, *experts):
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md"):
            assert (d / name).is_file(), (d, name)
        assert sha256_file(d / "tokenizer.json") == sha256_file(tok_path)  # the run's bytes, not a re-serialisation
        tok = AutoTokenizer.from_pretrained(d)
        assert tok.encode("def f(x): return x", add_special_tokens=False) == load_tokenizer(tok_path).encode("def f(x): return x").ids
        assert tok.eos_token == "<|endoftext|>" and tok.model_max_length == 16
        assert json.loads((d / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_model_card_front_matter_names_parent_domains_and_numbers(trained):
    _, seed_dir, experts, _ = trained
    card = ModelCard.load(experts[0] / "README.md")
    assert card.data.base_model is None and "| branched from | seed-M |" in card.text  # a local parent is no Hub id
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert {"hdee", "train", "alpha"} <= set(card.data.tags)
    record = json.loads((experts[0] / "hdee.json").read_text())
    assert f"{record['flops']:.3g}" in card.text and f"{record['steps']:,}" in card.text and "`tiny`" in card.text
    assert f"{record['params']['non_embedding'] / 1e6:.2f}M non-embedding" in card.text
    seed_card = ModelCard.load(seed_dir / "README.md")
    assert seed_card.data.base_model is None and "seed" in seed_card.data.tags and "trained from scratch" in seed_card.text


def test_transformers_pipeline_generates_from_an_expert_dir(trained):
    _, _, experts, _ = trained
    generate = pipeline("text-generation", model=str(experts[1]), device="cpu")
    out = generate("def f(x):", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert out.startswith("def f(x):") and len(out) > len("def f(x):")


def test_averaged_dir_is_self_contained_too(trained, tmp_path):
    tok_path, _, experts, _ = trained
    out = average_experts(experts, None, tmp_path / "avg")
    assert sha256_file(out / "tokenizer.json") == sha256_file(tok_path)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None and "average" in card.data.tags
    assert f"| parents | {', '.join(e.name for e in experts)} |" in card.text
    assert "non-embedding" in card.text and "- non-embedding" not in card.text  # the parents' counts
    generate = pipeline("text-generation", model=str(out), device="cpu")
    assert generate("import", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("import")


def test_lm_eval_hf_model_loads_an_expert_dir(trained):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    _, _, experts, _ = trained
    lm = HFLM(pretrained=str(experts[0]), device="cpu", batch_size=1)
    (ll, _greedy), = lm.loglikelihood([Instance("loglikelihood", {}, ("def f(x):", " return x"), 0)])
    assert ll < 0
