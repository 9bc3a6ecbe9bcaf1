"""lm-eval adapter: lm-eval's accuracy on a local multiple-choice task equals hdee's own from mixture log-likelihoods."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("lm_eval")

from hdee.run import load_run  # noqa: E402
from hdee.cli.app import app  # noqa: E402
from hdee.data.tokenizer import load_hf_tokenizer  # noqa: E402
from hdee.ensemble import Ensemble  # noqa: E402
from hdee.core.errors import EnsembleError  # noqa: E402
from hdee.evaluation.lm_eval import EnsembleLM  # noqa: E402
from tests.helpers.cli_helpers import cli_error  # noqa: E402
from tests.helpers.run_fixture import ROOT, make_run  # noqa: E402


torch.set_num_threads(1)
TASK_DIR = ROOT / "tests/data/lm_eval"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(make_run(tmp_path_factory.mktemp("lmeval") / "run").root)


def _own_choice_logliks(run, strategy: str, method: str) -> list[list[float]]:
    """For each question, each choice's log-likelihood as hdee's evaluation mixes it: one window of the run's
    seq_len + 1 tokens ending with the choice, the continuation's log-probs summed."""
    window = run.cfg.data.seq_len + 1
    tok = load_hf_tokenizer(run.layout.tokenizer_path)
    ens = Ensemble(run.ensemble_dirs(strategy))
    out = []
    for line in (TASK_DIR / "hdee_tiny_mc.jsonl").read_text().splitlines():
        doc = json.loads(line)
        context = f"Question: {doc['question']}\nAnswer:"
        ctx = tok.encode(context, add_special_tokens=False)
        scores = []
        for choice in doc["choices"]:
            whole = tok.encode(context + " " + choice, add_special_tokens=False)
            n_cont = len(whole) - len(ctx)
            mixture = ens.log_probs(np.asarray([whole[-window:]]), method)[0]  # log p of tokens 1..T
            scores.append(float(mixture[-n_cont:].sum()))
        out.append(scores)
    return out


@pytest.mark.parametrize("method", ["prefix-posterior", "product"])
def test_lm_eval_accuracy_equals_hdee_accuracy(run, method, monkeypatch):
    monkeypatch.chdir(ROOT)  # the task yaml names its jsonl relative to the repository root
    res = CliRunner().invoke(app, ["lm-eval", str(run.layout.root), "--strategy", "MHe-IHo", "--method", method,
                                   "--tasks", "hdee_tiny_mc", "--include-path", str(TASK_DIR), "--log-samples",
                                   "--bootstrap-iters", "100"])
    assert res.exit_code == 0, res.output
    assert "hdee_tiny_mc" in res.output and "acc" in res.output
    saved = json.loads(run.layout.lm_eval_path("MHe-IHo", method, ["hdee_tiny_mc"]).read_text())
    assert isinstance(saved["results"]["hdee_tiny_mc"]["acc_stderr,none"], float)  # standard errors kept
    own = _own_choice_logliks(run, "MHe-IHo", method)
    answers = [json.loads(line)["answer"] for line in (TASK_DIR / "hdee_tiny_mc.jsonl").read_text().splitlines()]
    own_acc = float(np.mean([int(np.argmax(s)) == a for s, a in zip(own, answers)]))
    assert saved["results"]["hdee_tiny_mc"]["acc,none"] == pytest.approx(own_acc)
    samples = sorted(saved["samples"]["hdee_tiny_mc"], key=lambda s: s["doc_id"])
    for sample, mine in zip(samples, own):
        theirs = [float(r[0][0]) for r in sample["resps"]]
        assert theirs == pytest.approx(mine, rel=1e-6, abs=1e-6)
    assert saved["hdee"]["strategy"] == "MHe-IHo" and saved["hdee"]["method"] == method


def test_rolling_and_generation_follow_the_mixture(run):
    from lm_eval.api.instance import Instance
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    lm = EnsembleLM(run.ensemble_dirs("MHo-IHo"), run.layout.tokenizer_path, "prefix-posterior", max_length=16)
    text = "def add(a, b):\n    return a + b\n" * 3  # longer than one 16-token window
    (total,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    ids = lm.tok_encode(text)
    ens = Ensemble(run.ensemble_dirs("MHo-IHo"))
    windows = [make_disjoint_window(w) for w in get_rolling_token_windows(ids, lm.eot_token_id, 16, 1)]
    assert len(windows) > 2 and windows[0][0] == [lm.eot_token_id]  # EOS first; several windows
    want = 0.0
    for ctx, cont in windows:  # each window mixed on its own, its continuation's log-probs summed
        want += float(ens.log_probs(np.asarray([ctx + cont]), "prefix-posterior")[0][-len(cont):].sum())
    assert total == pytest.approx(want, rel=1e-6)
    (out,) = lm.generate_until([Instance("generate_until", {}, ("import os", {"until": ["\n"], "max_gen_toks": 5}), 0)])
    greedy = ens.generate(lm.tok_encode("import os")[-11:], 5, 0.0, method="prefix-posterior", eos_id=lm.eot_token_id)
    assert out == lm.tokenizer.decode(greedy.new_ids).split("\n")[0]


def test_bad_requests_are_one_line_errors(run, monkeypatch):
    with pytest.raises(EnsembleError, match="cached-prior needs a prior"):
        EnsembleLM(run.ensemble_dirs("MHo-IHo"), run.layout.tokenizer_path, "cached-prior")
    monkeypatch.chdir(ROOT)
    for args, match in (
        (["--strategy", "nope"], "no strategy 'nope'"),
        (["--tasks", "no_such_task_here"], "task 'no_such_task_here' not found"),
        (["--method", "cached-prior", "--prior-domain", "nowhere"], "is not a domain of the run"),
    ):
        full = ["lm-eval", str(run.layout.root), "--strategy", "MHo-IHo", "--tasks", "hdee_tiny_mc",
                "--include-path", str(TASK_DIR), *args]
        res = CliRunner().invoke(app, full)
        assert match in cli_error(res)


def test_results_are_never_overwritten_and_record_absolute_paths(run, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = ["lm-eval", str(run.layout.root), "--strategy", "MHo-IHo", "--tasks", "hdee_tiny_mc",
            "--include-path", str(TASK_DIR.relative_to(ROOT)), "--bootstrap-iters", "0"]
    out = tmp_path / "mine.json"
    res = CliRunner().invoke(app, [*base, "--output-path", str(out)])
    assert res.exit_code == 0, res.output
    first = out.read_bytes()
    saved = json.loads(first)
    assert "samples" not in saved  # only with --log-samples
    hdee = saved["hdee"]
    assert all(Path(p).is_absolute() for p in (*hdee["experts"], hdee["run_dir"], hdee["include_path"], hdee["output_path"]))
    again = CliRunner().invoke(app, [*base, "--output-path", str(out)])
    assert "already exists" in cli_error(again) and out.read_bytes() == first  # refused, untouched
    forced = CliRunner().invoke(app, [*base, "--output-path", str(out), "--force", "--batch-size", "3"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(out.read_text())["results"]["hdee_tiny_mc"]["acc,none"] == saved["results"]["hdee_tiny_mc"]["acc,none"]
    default = CliRunner().invoke(app, base)
    assert default.exit_code == 0 and run.layout.lm_eval_path("MHo-IHo", "prefix-posterior", ["hdee_tiny_mc"]).is_file()
    other = run.layout.lm_eval_path("MHo-IHo", "prefix-posterior", ["another_task"])
    assert other != run.layout.lm_eval_path("MHo-IHo", "prefix-posterior", ["hdee_tiny_mc"])


def test_a_batch_scores_each_request_as_alone(run):
    one = EnsembleLM(run.ensemble_dirs("MHe-IHo"), run.layout.tokenizer_path, "prefix-posterior", max_length=16)
    four = EnsembleLM(run.ensemble_dirs("MHe-IHo"), run.layout.tokenizer_path, "prefix-posterior", max_length=16, batch_size=4)
    texts = ["def add(a, b):", "import os", "The quick brown fox jumps over the lazy dog while", "Question:"]
    requests = [(None, one.tok_encode(t), one.tok_encode(" return")) for t in texts]
    alone, batched = one._loglikelihood_tokens(requests), four._loglikelihood_tokens(requests)
    assert [g for _, g in alone] == [g for _, g in batched]
    assert [ll for ll, _ in batched] == pytest.approx([ll for ll, _ in alone], rel=1e-5, abs=1e-5)
