"""How much memory one training process needs, and the micro batch a memory budget allows.

The micro batch is a function of the config alone (model, vocabulary, loss, `train.memory_gib`),
never of the memory a card happens to have free, so a job's numbers and its exact resume do
not depend on where it runs. The activation term is calibrated on the one measurement there is:
HF Llama under bf16 autocast keeps fp32 copies in its norms and rotary embeddings, and the M
expert of `configs/paper-small-close.toml` had 57 GiB allocated on an H100 at 43,008 tokens when
its fp32 logits were requested, of which about 45 GiB were activations (the rest: 10.3 GiB of
bf16 logits, the weights); the formula below gives 44.5 GiB there. Counted at 4 bytes a value,
it over-estimates the CPU's fp32 path a little, which only errs on the safe side.
"""

from __future__ import annotations

from hdee.model import SizeSpec, param_counts
from hdee.train.loss import chunk_rows

GIB = 1 << 30
#: fp32 weights, gradients and AdamW's two moments
BYTES_PER_PARAM = 16
#: allocator slack, CUDA context and workspaces
OVERHEAD_BYTES = GIB // 2


def activation_bytes_per_token(spec: SizeSpec) -> int:
    """Saved activations of one token through the whole model, in bytes.

    Per layer, 10 hidden-sized values (norm inputs and outputs, query, rotated query, attention
    output), 4 key/value-sized ones (keys, values, rotated keys, their casts) and 4 MLP-sized
    ones (gate, up, activation, product), at 4 bytes; plus the embedding output and final norm.
    """
    d, kv = spec.hidden, spec.kv_heads * spec.head_dim
    per_layer = 10 * d + 4 * kv + 4 * spec.intermediate
    return 4 * (spec.layers * per_layer + 2 * d)


def loss_bytes(spec: SizeSpec, tokens: int, loss: str) -> int:
    """The head's logits: all of them (fp32 copy, log-softmax, gradient) for `plain`, one chunk otherwise."""
    if loss == "plain":
        return 4 * 4 * tokens * spec.vocab  # logits, their fp32 copy, log-softmax and its gradient
    rows = min(tokens, chunk_rows(spec.vocab))
    return 3 * 4 * rows * spec.vocab + 2 * 4 * tokens * spec.hidden  # one chunk; hidden states and their gradient


def estimate_bytes(spec: SizeSpec, micro_tokens: int, loss: str = "plain") -> int:
    """Peak memory of one forward/backward/AdamW step on `micro_tokens` tokens."""
    fixed = BYTES_PER_PARAM * param_counts(spec)["total"] + OVERHEAD_BYTES
    return fixed + micro_tokens * activation_bytes_per_token(spec) + loss_bytes(spec, micro_tokens, loss)


def micro_tokens_for_budget(spec: SizeSpec, memory_gib: float, loss: str = "plain") -> int:
    """The most tokens per micro-batch, whole sequences, whose estimate fits `memory_gib`; 0 if not one sequence."""
    budget = int(memory_gib * GIB)
    lo, hi = 0, 1
    while estimate_bytes(spec, hi * spec.seq_len, loss) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the estimate grows with the sequence count: bisect for the last one that fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate_bytes(spec, mid * spec.seq_len, loss) <= budget else (lo, mid)
    return lo * spec.seq_len
