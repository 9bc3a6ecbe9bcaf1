"""Product of experts: the normalised geometric mean of the experts' next-token distributions.

    log p(x_t) = (1/K) sum_k log p_k(x_t) - log sum_v exp( (1/K) sum_k log p_k(v) )

The normaliser needs every expert's full distribution, so unlike the other methods it cannot be
computed from cached true-token scores; it runs the models on a bounded number of windows.
Memory: the K models plus two [batch, seq_len, vocab] tensors, independent of K.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from hdee.core.errors import EnsembleError


@torch.inference_mode()
def product_scores(models: Sequence[torch.nn.Module], windows: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Product-of-experts log-probs of the true next tokens, float64 [n, seq_len]."""
    if not models:
        raise EnsembleError("product of experts needs at least one model")
    windows = np.asarray(windows, dtype=np.int64)
    n, width = windows.shape
    out = np.empty((n, width - 1), dtype=np.float64)
    scale = 1.0 / len(models)
    for start in range(0, n, batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch_size]))
        acc: torch.Tensor | None = None
        for model in models:
            part = torch.log_softmax(model(input_ids=batch[:, :-1], use_cache=False).logits.float(), dim=-1).mul_(scale)
            acc = part if acc is None else acc.add_(part)
            del part
        assert acc is not None
        acc = torch.log_softmax(acc, dim=-1)
        out[start : start + len(batch)] = acc.gather(-1, batch[:, 1:, None]).squeeze(-1).double().numpy()
    return out
