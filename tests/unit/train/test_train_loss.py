"""The logits-free losses equal the plain loss on CPU: values, gradients and whole training runs."""

import importlib.util

import pytest
import torch

from hdee.expert_dir import read_metrics
from hdee.model import build_model
from hdee.train import loss as train_loss
from hdee.train import run_train_job
from hdee.train.loss import CausalLMLoss, chunked_cross_entropy, compute_loss, loss_backend
from tests.helpers.train_helpers import SEQ, VOCAB, make_domain, tiny_job, tiny_spec

torch.set_num_threads(1)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 tokens: a batch of 2 x 16 spans 5 chunks, the last one ragged."""
    monkeypatch.setattr(train_loss, "CHUNK_LOGITS", 7 * VOCAB)


def _windows(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, SEQ + 1), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_loss_and_gradients_equal_the_plain_ones(small_chunks, tied):
    x = _windows()
    grads = {}
    losses = {}
    for kind in ("plain", "chunked"):
        model = build_model(tiny_spec(tie_embeddings=tied), seed=3)
        loss = CausalLMLoss(model, kind)(x)
        loss.backward()
        losses[kind] = loss.item()
        grads[kind] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert losses["chunked"] == pytest.approx(losses["plain"], abs=1e-4)
    assert losses["chunked"] > 1.0  # a real loss, not a degenerate zero
    assert grads["plain"].keys() == grads["chunked"].keys()
    for name, g in grads["plain"].items():
        assert torch.allclose(grads["chunked"][name], g, rtol=1e-4, atol=1e-6), name
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    assert grads["chunked"][head].abs().sum() > 0


def test_chunked_cross_entropy_matches_f_cross_entropy_without_grad(small_chunks):
    gen = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(37, 24, generator=gen), torch.randn(VOCAB, 24, generator=gen)
    targets = torch.randint(0, VOCAB, (37,), generator=gen)
    want = torch.nn.functional.cross_entropy(hidden @ weight.T, targets)
    with torch.no_grad():
        got = chunked_cross_entropy(hidden, weight, targets)
    assert got.item() == pytest.approx(want.item(), abs=1e-4)
    # and with gradients through the autograd function, scaled by the caller's factor
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    (chunked_cross_entropy(h, w, targets) * 0.5).backward()
    hr, wr = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    (torch.nn.functional.cross_entropy(hr @ wr.T, targets) * 0.5).backward()
    assert torch.allclose(h.grad, hr.grad, atol=1e-6) and torch.allclose(w.grad, wr.grad, atol=1e-6)


def test_plain_module_is_the_reference_loss_bit_for_bit():
    model = build_model(tiny_spec(), seed=3)
    x = _windows(seed=4)
    assert torch.equal(CausalLMLoss(model, "plain")(x), compute_loss(model, x))


@pytest.mark.slow
def test_training_with_the_chunked_loss_follows_the_plain_run(tmp_path, small_chunks):
    domains = [make_domain(tmp_path / "data", "alpha", 1)]
    plain = run_train_job(tiny_job(tmp_path / "plain", domains, steps=4))
    chunked = run_train_job(tiny_job(tmp_path / "chunked", domains, steps=4, train={"loss": "chunked"}))
    assert chunked["train"]["loss"] == "chunked" and "loss" not in plain["train"]
    rows_p = read_metrics(tmp_path / "plain" / "metrics.jsonl")
    rows_c = read_metrics(tmp_path / "chunked" / "metrics.jsonl")
    for a, b in zip(rows_p[1:], rows_c[1:]):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
    assert chunked["final_val_loss"] == pytest.approx(plain["final_val_loss"], abs=1e-4)
    assert chunked["final_val_loss"] < rows_c[0]["val_loss"]  # it trains


def test_fused_resolves_to_an_installed_kernel_on_cuda_only(monkeypatch):
    assert loss_backend("plain", torch.device("cuda")) == "plain"
    assert loss_backend("fused", torch.device("cpu")) == "chunked"
    installed = {"cut_cross_entropy"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert loss_backend("fused", torch.device("cuda")) == "cut-cross-entropy"
    installed.add("liger_kernel")
    assert loss_backend("fused", torch.device("cuda")) == "liger"
    assert loss_backend("fused", torch.device("cpu")) == "chunked"
    installed.clear()
    assert loss_backend("fused", torch.device("cuda")) == "chunked"
    with pytest.raises(ValueError, match="unknown loss 'fast'"):
        loss_backend("fast", torch.device("cpu"))


def test_bf16_head_matmul_as_on_cuda_agrees_within_bf16_rounding(small_chunks):
    """The dtype path CUDA's autocast takes (bf16 matmuls, fp32 softmax and sums), run on CPU."""
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(40, 32, generator=gen).requires_grad_()
    weight = (torch.randn(VOCAB, 32, generator=gen) * 0.1).requires_grad_()
    targets = torch.randint(0, VOCAB, (40,), generator=gen)
    loss = chunked_cross_entropy(hidden, weight, targets, dtype=torch.bfloat16)
    loss.backward()
    assert loss.dtype == torch.float32 and hidden.grad.dtype == weight.grad.dtype == torch.float32
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(h @ w.T, targets)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-2)
    for got, want in ((hidden.grad, h.grad), (weight.grad, w.grad)):
        assert (got - want).norm() / want.norm() < 2e-2
