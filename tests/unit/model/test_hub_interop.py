"""Experts as a Hugging Face user meets them: they stop at end-of-text, pad and batch, cache keys
and values, and carry a Hub-grade card with the run's measured perplexities."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList, pipeline

from hdee.execute.jobs import is_done
from hdee.core.fsutil import read_json
from hdee.plan import Plan

torch.set_num_threads(1)


class ForceEosAfter(LogitsProcessor):
    """Every token after the first `n` new ones is end-of-text: a model that stops emits exactly one."""

    def __init__(self, prompt_len: int, n: int, eos: int):
        self.prompt_len, self.n, self.eos = prompt_len, n, eos

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len >= self.n:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.eos] = 0.0
        return scores


@pytest.fixture(scope="module")
def expert(tiny_run):
    return tiny_run.final_experts("MHo-IHo")[0]


def test_special_tokens_and_cache_are_saved(expert):
    config = json.loads((expert / "config.json").read_text())
    generation = json.loads((expert / "generation_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(expert)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert config["eos_token_id"] == config["bos_token_id"] == eos
    assert config.get("pad_token_id") is None  # it would be the embedding's padding_idx: frozen in a branch's training
    assert generation["eos_token_id"] == generation["pad_token_id"] == eos
    assert config["use_cache"] is True
    assert tok.pad_token == tok.eos_token == "<|endoftext|>" and len(tok) == config["vocab_size"]  # no new token


def test_generate_and_pipeline_stop_at_end_of_text(expert):
    tok = AutoTokenizer.from_pretrained(expert)
    model = AutoModelForCausalLM.from_pretrained(expert)
    ids = tok("def f(x):", return_tensors="pt")
    n = ids["input_ids"].shape[1]
    out = model.generate(**ids, max_new_tokens=12, do_sample=False,
                         logits_processor=LogitsProcessorList([ForceEosAfter(n, 3, tok.eos_token_id)]))
    new = out[0, n:].tolist()
    assert len(new) == 4 and new[-1] == tok.eos_token_id and tok.eos_token_id not in new[:-1]
    generate = pipeline("text-generation", model=str(expert), device="cpu")
    text = generate("def f(x):", max_new_tokens=12, do_sample=False, return_tensors=True,
                    logits_processor=LogitsProcessorList([ForceEosAfter(n, 2, tok.eos_token_id)]))[0]["generated_token_ids"]
    assert text[n:] == [*text[n:n + 2], tok.eos_token_id] and len(text) == n + 3


def test_a_padded_batch_scores_like_single_sequences(expert):
    tok = AutoTokenizer.from_pretrained(expert)
    model = AutoModelForCausalLM.from_pretrained(expert).eval()
    texts = ["import os\nprint(os.sep)", "def"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"].sum(1).tolist() != [batch["input_ids"].shape[1]] * 2  # the short one was padded
    with torch.no_grad():
        padded = torch.log_softmax(model(**batch).logits.double(), -1)
        for i, text in enumerate(texts):
            single = tok(text, return_tensors="pt")["input_ids"]
            alone = torch.log_softmax(model(input_ids=single).logits.double(), -1)[0]
            n = single.shape[1]
            lp_alone = alone[:-1].gather(-1, single[0, 1:, None])[:, 0]
            lp_batch = padded[i, : n - 1].gather(-1, batch["input_ids"][i, 1:n, None])[:, 0]
            assert torch.allclose(lp_alone, lp_batch, atol=1e-5), (text, (lp_alone - lp_batch).abs().max())


def test_cards_are_hub_cards_with_the_measured_perplexities(tiny_run, expert):
    results = read_json(tiny_run.layout.results_json)
    card = ModelCard.load(expert / "README.md")
    data = card.data
    assert data.license and data.language == ["en"] and data.base_model is None  # parents are local, not Hub ids
    measured = {r.dataset_name: r.metric_value for r in data.eval_results}
    expected = results["experts"][expert.name]["ppl"]
    assert measured.keys() == expected.keys() and all(abs(measured[d] - expected[d]) < 1e-4 for d in expected)
    assert all(r.metric_type == "perplexity" and r.dataset_split == "test" for r in data.eval_results)
    record = json.loads((expert / "hdee.json").read_text())
    assert f"{record['flops']:.3g}" in card.text and f"{record['flops_full']:.3g}" in card.text
    assert "paper count" in card.text and "hardware count" in card.text
    assert f"{tiny_run.cfg.data.seq_len} tokens" in card.text and "## Intended use" in card.text and "## Limitations" in card.text
    assert f'model="{expert.resolve()}"' in card.text  # loads from any working directory
    assert "`pydoc_topics`: PSF-2.0" in card.text or "`c_headers`" in card.text


def test_rewriting_the_card_leaves_the_job_done(tiny_run):
    plan = Plan.model_validate(tiny_run.plan)
    model_jobs = [j for j in plan.jobs if j.kind in ("seed", "train")]
    assert model_jobs and all(is_done(j, tiny_run.layout.root) for j in model_jobs)
    record = read_json(tiny_run.layout.done_record(model_jobs[0].id))
    assert not any(rel.endswith("README.md") for rel in record["outputs"])


def test_a_record_from_before_still_verifies_after_the_card_changes(tiny_run, tmp_path):
    from hdee.core.fsutil import sha256_file

    layout = tiny_run.copy(tmp_path / "run")
    job = next(j for j in Plan.model_validate(tiny_run.plan).jobs if j.kind == "train")
    path = layout.done_record(job.id)
    record = json.loads(path.read_text())
    card = layout.expert_dir(job.id) / "README.md"
    record["outputs"][str(card.relative_to(layout.root))] = sha256_file(card)  # as records listed it before
    path.write_text(json.dumps(record))
    card.write_text(card.read_text() + "\nedited\n")
    assert is_done(job, layout.root)
    weights = layout.expert_dir(job.id) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # the weights still count
    assert not is_done(job, layout.root)
