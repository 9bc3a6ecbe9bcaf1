"""The next-token loss, with or without the full logits tensor.

`plain` is the reference: the model's logits, cast to fp32, then cross-entropy. With a large
vocabulary that tensor dominates memory (43,008 tokens x 128,002 logits are 20.5 GiB in fp32,
more again for its gradient), so `chunked` computes the head matmul and the cross-entropy a
slice of tokens at a time and never holds more than one slice of logits; `fused` uses a fused
kernel (liger-kernel, else cut-cross-entropy) where one is installed and the model is on CUDA,
and the chunked loss otherwise. All three give the same loss and gradients up to rounding.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Callable

import torch
import torch.nn.functional as F

log_ = logging.getLogger("hdee.train")

#: logits per chunk of the chunked loss: 2**28 fp32 values (1 GiB), e.g. 2,097 tokens at vocab 128,002
CHUNK_LOGITS = 1 << 28
LOSS_KINDS = ("plain", "chunked", "fused")


def compute_loss(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of windows [n, seq_len + 1] from the model's full logits."""
    logits = model(input_ids=windows[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1))


def chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_LOGITS // vocab)


def _chunks(hidden, weight, targets, dtype, with_grads: bool):
    """Sum of token losses over chunks; with the gradients of their mean when asked."""
    n, rows = hidden.size(0), chunk_rows(weight.size(0))
    h, w = hidden.to(dtype), weight.to(dtype)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_h = torch.empty_like(hidden) if with_grads else None
    grad_w = torch.zeros_like(weight, dtype=torch.float32) if with_grads else None
    for start in range(0, n, rows):
        hc, tc = h[start : start + rows], targets[start : start + rows]
        logits = (hc @ w.T).float()
        lse = torch.logsumexp(logits, dim=-1)
        total += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
        if with_grads:  # d(mean loss)/d(logits) = (softmax - one-hot) / n, built in place
            probs = logits.sub_(lse[:, None]).exp_()
            probs.scatter_add_(1, tc[:, None], torch.full_like(lse[:, None], -1.0))
            g = probs.div_(n).to(dtype)
            grad_h[start : start + rows] = g @ w
            grad_w += (g.T @ hc).float()
    return total, grad_h, grad_w


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Gradients are computed during the forward pass, chunk by chunk, so no logits are kept."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, dtype):
        with torch.autocast(hidden.device.type, enabled=False):
            total, grad_h, grad_w = _chunks(hidden, weight, targets, dtype, with_grads=True)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total / hidden.size(0)

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Mean cross-entropy of `hidden [n, d] @ weight[V, d].T` against `targets [n]`, one chunk of logits at a time.

    `dtype` is the matmul dtype (bf16 under CUDA autocast); softmax and sums are always fp32.
    """
    dtype = dtype or hidden.dtype
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, dtype)
    with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
        return _chunks(hidden, weight, targets, dtype, with_grads=False)[0] / hidden.size(0)


LinearCE = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.dtype | None"], torch.Tensor]


def _liger(hidden, weight, targets, dtype):
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    dtype = dtype or hidden.dtype
    return LigerFusedLinearCrossEntropyLoss()(weight.to(dtype), hidden.to(dtype), targets).float()


def _cut_cross_entropy(hidden, weight, targets, dtype):
    from cut_cross_entropy import linear_cross_entropy

    dtype = dtype or torch.bfloat16  # its kernels take bf16/fp16 only
    return linear_cross_entropy(hidden.to(dtype), weight.to(dtype), targets).float()


def loss_backend(kind: str, device: torch.device) -> str:
    """Which implementation `kind` resolves to on `device`: plain, chunked, liger or cut-cross-entropy."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss {kind!r}; known: {', '.join(LOSS_KINDS)}")
    if kind != "fused":
        return kind
    if device.type == "cuda":
        for module, name in (("liger_kernel", "liger"), ("cut_cross_entropy", "cut-cross-entropy")):
            if importlib.util.find_spec(module) is not None:
                return name
    return "chunked"


_LINEAR_CE: dict[str, LinearCE] = {"chunked": chunked_cross_entropy, "liger": _liger, "cut-cross-entropy": _cut_cross_entropy}


class CausalLMLoss(torch.nn.Module):
    """A causal LM and its mean next-token loss as one module, so DDP and torch.compile wrap both.

    `forward(windows [n, seq_len + 1])` returns the loss. `amp` is the autocast matmul dtype the
    caller trains under (None on CPU), which the logits-free losses use for the head matmul.
    """

    def __init__(self, lm: torch.nn.Module, kind: str = "plain", device: torch.device | None = None, amp: torch.dtype | None = None):
        super().__init__()
        self.lm = lm
        self.backend = loss_backend(kind, device or torch.device("cpu"))
        self.amp = amp
        if self.backend != kind:
            log_.info("loss %r uses the %s implementation on %s", kind, self.backend, device)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        if self.backend == "plain":
            return compute_loss(self.lm, windows)
        hidden = self.lm.get_decoder()(input_ids=windows[:, :-1], use_cache=False).last_hidden_state
        weight = self.lm.get_output_embeddings().weight
        return _LINEAR_CE[self.backend](hidden.reshape(-1, hidden.size(-1)), weight, windows[:, 1:].reshape(-1), self.amp)
