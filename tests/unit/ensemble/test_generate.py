"""Generation with experts the real trainer made: seeded, KV-cached path equals recomputation,
weights follow the evaluation posterior, the tokenizer must be the experts' own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hdee.cli.app import app
from hdee.ensemble import Ensemble, estimate_prior
from hdee.core.errors import EnsembleError

torch.set_num_threads(1)

PROMPT = [3, 17, 42, 7]


@pytest.fixture(scope="module")
def dirs(tiny_run):
    """Three sizes: MHe-IHo's S and L experts and an M expert of MHo-IHo."""
    small, large = tiny_run.final_experts("MHe-IHo")
    return [small, tiny_run.final_experts("MHo-IHo")[0], large]


@pytest.fixture(scope="module")
def ens(dirs):
    return Ensemble(dirs)


def test_seeded_generation_is_reproducible(ens):
    a = ens.generate(PROMPT, 12, temperature=1.0, seed=123)
    b = ens.generate(PROMPT, 12, temperature=1.0, seed=123)
    assert a.new_ids == b.new_ids and len(a.new_ids) == 12
    others = {tuple(ens.generate(PROMPT, 12, seed=s).new_ids) for s in range(4)}
    assert len(others) > 1


@pytest.mark.parametrize("method", ["uniform", "prefix-posterior", "prevtoken-posterior", "top-k", "product", "cached-prior"])
def test_kv_cache_equals_recomputation(ens, method):
    prior = np.log([0.6, 0.3, 0.1])
    kw = dict(seed=9, keep_distributions=True, log_prior=prior, top_k=2)
    cached = ens.generate(PROMPT, 10, method=method, use_cache=True, **kw)
    fresh = ens.generate(PROMPT, 10, method=method, use_cache=False, **kw)
    assert cached.new_ids == fresh.new_ids
    np.testing.assert_allclose(cached.step_logprobs, fresh.step_logprobs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(cached.step_logprobs).sum(-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("method", ["prefix-posterior", "prevtoken-posterior", "top-k", "uniform"])
def test_generation_mixture_matches_cached_evaluation(ens, method):
    """The probability generation gave each sampled token equals the evaluation mixture on that text."""
    out = ens.generate(PROMPT, 8, method=method, seed=4, keep_distributions=True)
    seq = np.array([out.ids])
    want = ens.log_probs(seq, method)[0, len(PROMPT) - 1 :]
    got = out.step_logprobs[np.arange(8), out.new_ids]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_weights_and_greedy(ens):
    out = ens.generate(PROMPT, 5, method="prefix-posterior", seed=0)
    assert out.weights.shape == (5, 3)
    np.testing.assert_allclose(out.weights.sum(1), 1.0)
    greedy = ens.generate(PROMPT, 6, temperature=0, seed=1, keep_distributions=True)
    assert greedy.new_ids == list(np.argmax(greedy.step_logprobs, axis=1))
    tiny_p = ens.generate(PROMPT, 6, temperature=1.0, top_p=1e-9, seed=2)
    assert tiny_p.new_ids == greedy.new_ids
    topk = ens.generate(PROMPT, 6, method="top-k", top_k=1, seed=3)
    assert ((topk.weights > 0).sum(1) == 1).all()


def test_generation_errors(ens):
    with pytest.raises(EnsembleError, match="cannot generate with method 'best-expert'"):
        ens.generate(PROMPT, 2, method="best-expert")
    with pytest.raises(EnsembleError, match="needs a prior"):
        ens.generate(PROMPT, 2, method="cached-prior")
    with pytest.raises(EnsembleError, match="needs a tokenizer"):
        ens.generate("hello", 2)
    with pytest.raises(EnsembleError, match="outside the experts' vocabulary"):
        ens.generate([999], 2)
    with pytest.raises(EnsembleError, match="at least one token"):
        ens.generate([], 2)


def test_prior_from_estimate_prior_is_accepted(ens):
    val = ens.score(np.array([PROMPT + [5, 6, 7]]))
    out = ens.generate(PROMPT, 3, method="cached-prior-prevtoken", log_prior=estimate_prior(val, 0.3))
    assert len(out.new_ids) == 3


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    """A valid tokenizer.json that is not the experts' (a 256-word vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "[EOS]"] + [f"w{i}" for i in range(254)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_text_prompt_and_cli(ens, dirs, tiny_run):
    tokenizer = tiny_run.layout.tokenizer_path
    out = ens.generate("def main():", 4, seed=0, tokenizer=tokenizer)
    assert len(out.prompt_ids) >= 2 and len(out.new_ids) <= 4 and isinstance(out.text, str)
    res = CliRunner().invoke(app, ["generate", *map(str, dirs), "--prompt", "def main():", "--tokenizer",
                                   str(tokenizer), "--max-new-tokens", "4", "--seed", "0"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("def main():") and res.stdout.rstrip("\n") == "def main():" + out.text


def test_a_tokenizer_other_than_the_experts_is_refused(ens, dirs, other_tokenizer):
    with pytest.raises(EnsembleError, match="tokenizer hash .* differs from the experts'"):
        ens.generate("w1 w2", 2, tokenizer=other_tokenizer)
    res = CliRunner().invoke(app, ["generate", *map(str, dirs), "--prompt", "w1 w2", "--tokenizer", str(other_tokenizer)])
    assert res.exit_code == 2 and "differs from the experts'" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(ens):
    class Big:
        def __len__(self):
            return ens.vocab_size + 1

    with pytest.raises(EnsembleError, match=f"more than the experts' vocabulary of {ens.vocab_size}"):
        ens.generate("text", 2, tokenizer=Big())


def test_cli_error_exits_2(dirs, tmp_path, monkeypatch):
    import sys

    from hdee.cli import main

    monkeypatch.setattr(sys, "argv", ["hdee", "generate", str(dirs[0]), "--prompt", "x", "--tokenizer", str(tmp_path / "none.json")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2


def test_cache_name_follows_the_transformers_version(ens):
    """`cache` in recent transformers, `past_key_values` in older 5.x: the stream uses what forward takes."""
    import inspect

    from hdee.ensemble.generate import _ExpertStream

    stream = _ExpertStream(ens.models[0], use_cache=True)
    assert stream.cache_kwarg in inspect.signature(ens.models[0].forward).parameters
    stream.start(PROMPT)
    assert stream.cache is not None


def test_generate_from_a_run_by_strategy(tiny_run):
    root = str(tiny_run.layout.root)
    ens = Ensemble(tiny_run.final_experts("MHo-IHo"))
    want = ens.generate("def main():", 4, temperature=0.0, tokenizer=tiny_run.layout.tokenizer_path, top_k=tiny_run.cfg.eval.top_k)
    res = CliRunner().invoke(app, ["generate", root, "--strategy", "MHo-IHo", "--prompt", "def main():",
                                   "--max-new-tokens", "4", "--temperature", "0"])
    assert res.exit_code == 0, res.output
    assert res.stdout.rstrip("\n") == "def main():" + want.text
    assert "tokens/s from 2 experts" in res.stderr and "warning" not in res.stderr
    routed = CliRunner().invoke(app, ["generate", root, "--strategy", "MHe-IHo", "--method", "routed-top1",
                                      "--prompt", "def main():", "--max-new-tokens", "2"])
    assert routed.exit_code == 0, routed.output
    assert "routed to " in routed.stderr and "from 1 expert" in routed.stderr


def test_generation_past_the_trained_context_warns(tiny_run):
    seq_len = tiny_run.cfg.data.seq_len
    res = CliRunner().invoke(app, ["generate", str(tiny_run.layout.root), "--strategy", "MHo-IHo", "--prompt", "def",
                                   "--max-new-tokens", str(seq_len + 3), "--temperature", "0"])
    assert res.exit_code == 0, res.output
    assert f"trained context of {seq_len} tokens by 4" in res.stderr


def test_generate_from_a_run_refuses_what_it_cannot_do(tiny_run):
    root = str(tiny_run.layout.root)
    for args, match in (
        (["--strategy", "nope"], "no strategy 'nope'"),
        (["--strategy", "MHo-IHo", "--method", "cached-prior"], "cached-prior needs a prior: add --prior-domain"),
        (["--strategy", "MHo-IHo", "--tokenizer", "x.json"], "--strategy takes one run directory"),
        (["--strategy", "MHo-IHo", "--method", "best-expert"], "cannot generate"),
    ):
        res = CliRunner().invoke(app, ["generate", root, "--prompt", "x", "--max-new-tokens", "1", *args])
        assert res.exit_code == 2 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
    prior = CliRunner().invoke(app, ["generate", root, "--strategy", "MHo-IHo", "--method", "cached-prior",
                                     "--prior-domain", tiny_run.cfg.eval_domains[0], "--prompt", "x", "--max-new-tokens", "1"])
    assert prior.exit_code == 0, prior.output
