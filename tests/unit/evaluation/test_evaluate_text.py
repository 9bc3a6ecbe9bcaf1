"""`hdee eval RUN_DIR --data`: any text, the run's tokenizer, a held-out prior slice, cached scores."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from hdee.cli.app import app
from hdee.core.errors import ConfigError, DataError
from hdee.data.loaders import eval_windows
from hdee.data.tokenizer import load_tokenizer
from hdee.ensemble import mixing, scoring
from hdee.evaluation.new_text import evaluate_text, parse_source, split_held_out
from hdee.registry import MIXING_METHODS
from hdee.run import load_run
from tests.helpers.cli_helpers import cli_error
from tests.helpers.run_fixture import CORPUS, make_run

torch.set_num_threads(1)
DOCS = [f"{CORPUS[i % 4]} number {i}: " + "more words here. " * (i % 5) for i in range(120)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaltext")
    make_run(root / "run")
    data = root / "text"
    data.mkdir()
    for i, doc in enumerate(DOCS):
        (data / f"doc{i:03d}.txt").write_text(doc)
    (data / "docs.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    pq.write_table(pa.table({"body": DOCS}), data / "docs.parquet")
    (root / "hub").mkdir()
    pq.write_table(pa.table({"body": DOCS}), root / "hub" / "train.parquet")
    return load_run(root / "run"), root


def _expected_tokens(run, docs):
    tok = load_tokenizer(run.layout.tokenizer_path)
    eos = tok.token_to_id("<|endoftext|>")
    return np.concatenate([np.asarray(e.ids + [eos]) for e in tok.encode_batch(docs, add_special_tokens=False)])


def test_files_source_scores_the_text_after_the_held_out_windows(run):
    run, root = run
    res = evaluate_text(run, str(root / "text" / "docs.jsonl"), "jl", max_tokens=512, text_field="body")
    seq = run.cfg.data.seq_len
    tokens = _expected_tokens(run, DOCS)
    prior_w = run.cfg.eval.prior_sequences  # 4: the text is long enough for the configured prior
    select_w = res["select"]["windows"]  # the next windows, at most a fifth of a text this short
    assert res["prior"]["windows"] == prior_w and 1 <= select_w <= run.cfg.eval.select_sequences
    assert res["domains"][0]["tokens"] == 512 and res["method_choice"]["chosen_on"] == "val"
    test_w = eval_windows(tokens[(prior_w + select_w) * seq + 1:], seq, 512)
    want = {eid: mixing.perplexity(scoring.score_expert(d, test_w)) for eid, d in run.experts.items()}
    for eid, v in want.items():
        assert res["experts"][eid]["ppl"]["jl"] == pytest.approx(v, rel=1e-6)
    # the prior comes from the first windows only, the method from the next ones; neither is scored
    val = np.stack([np.load(run.layout.score_path(e, "jl", "val")) for e in run.ensembles["MHo-IHo"].experts])
    assert val.shape[1] == prior_w + select_w
    prior = np.exp(mixing.estimate_prior(val[:, :prior_w], run.cfg.eval.prior_alpha))
    assert res["ensembles"]["MHo-IHo"]["priors"]["jl"] == pytest.approx(prior.tolist())
    assert res["ensembles"]["MHo-IHo"]["select_windows"]["jl"] == select_w
    assert run.layout.text_results_path("jl").is_file() and run.layout.csv_beside(run.layout.text_results_path("jl")).is_file()
    unrouted = {m for m in run.cfg.eval.methods if not MIXING_METHODS.get(m).routed}  # routers need the run's own domains
    assert set(res["ensembles"]) == {"MHo-IHo", "MHe-IHo"} and set(res["methods"]) == unrouted


def test_txt_glob_parquet_and_a_local_hf_dataset_agree(run):
    run, root = run
    # one document per txt file, in sorted order: the same documents as the parquet rows
    by_txt = evaluate_text(run, str(root / "text" / "doc*.txt"), "txt", max_tokens=256)
    by_parquet = evaluate_text(run, str(root / "text" / "docs.parquet"), "pq", max_tokens=256, text_field="body")
    by_hub = evaluate_text(run, f"hf:{root / 'hub'}", "hub", max_tokens=256, text_field="body")
    for eid in run.experts:
        a, b, c = (r["experts"][eid]["ppl"][n] for r, n in ((by_txt, "txt"), (by_parquet, "pq"), (by_hub, "hub")))
        assert a == pytest.approx(b, rel=1e-9) and b == pytest.approx(c, rel=1e-9)
    assert by_hub["source"] == f"hf:{root / 'hub'}"


def test_rerun_mixes_from_cache_without_a_forward_pass(run, monkeypatch):
    run, root = run
    first = evaluate_text(run, str(root / "text" / "docs.parquet"), "again", max_tokens=256, text_field="body")

    def no_scoring(*a, **k):
        raise AssertionError("rescored although cached")

    monkeypatch.setattr(scoring, "score_model", no_scoring)
    one = run.plan.model_copy(update={"ensembles": {"MHo-IHo": run.plan.ensembles["MHo-IHo"]}})
    methods = [m for m in run.cfg.eval.methods if m != "product"]
    cheap = dataclasses.replace(
        run, cfg=run.cfg.model_copy(update={"eval": run.cfg.eval.model_copy(update={"methods": methods})}), plan=one
    )
    again = evaluate_text(cheap, str(root / "text" / "docs.parquet"), "again", max_tokens=256, text_field="body")
    assert again["experts"] == json.loads(json.dumps(first["experts"]))


def test_short_text_gives_at_most_a_fifth_to_the_prior_and_to_the_choice():
    tokens = np.arange(10 * 8 + 1)
    head, scored, k, s = split_held_out(tokens, 8, prior_windows=100, select_windows=100)
    assert (k, s) == (2, 2) and len(head) == 4 * 8 + 1  # 2 + 2 of 10 windows
    assert scored[0] == head[-1] + 1  # no shared token
    with pytest.raises(DataError, match="needs at least 26"):
        split_held_out(np.arange(25), 8, 4, 4)


def test_source_parsing():
    hub = parse_source("hf:user/set:cfg:validation", "content")
    assert (hub.path, hub.name, hub.split, hub.text_field) == ("user/set", "cfg", "validation", "content")
    assert parse_source("hf:user/set").split == "train" and parse_source("hf:user/set").name is None
    assert parse_source("notes/*.txt").paths == ["notes/*.txt"]
    with pytest.raises(ConfigError, match="expected hf:DATASET"):
        parse_source("hf:")


def test_cli_prints_whole_tables_and_refuses_bad_input(run):
    run, root = run
    before = {p.name: p.read_bytes() for p in run.layout.results_dir.glob("eval-*.json")}
    res = CliRunner().invoke(app, ["eval", str(run.layout.root), "--data", str(root / "text" / "docs.jsonl"),
                                   "--text-field", "body", "--max-tokens", "256", "--name", "cli"])
    assert res.exit_code == 0, res.output
    assert "…" not in res.output and "perplexity on cli (256 tokens)" in res.output
    assert "train-hard-i2-L-8-cccc" in res.output and "never scored" in res.output
    for args, match in (
        (["--name", "c_headers"], "is a domain of the run's config already"),
        (["--name", "bad name"], "letters, digits"),
        (["--data", str(root / "nothing*.txt")], "no file matches"),
    ):
        full = ["eval", str(run.layout.root), "--data", str(root / "text" / "doc000.txt"), *args]
        bad = CliRunner().invoke(app, full)
        assert match in cli_error(bad)
    short = CliRunner().invoke(app, ["eval", str(run.layout.root), "--data", str(root / "text" / "doc000.txt")])
    assert "needs at least" in cli_error(short)
    for name, data in before.items():
        assert (run.layout.results_dir / name).read_bytes() == data
