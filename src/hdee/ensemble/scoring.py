"""Per-token log-probabilities of the true next token, one expert at a time, cached on disk.

Every mixing method except `product` needs only log p_k(x_t | x_<t) of the tokens that were
actually there, so each expert runs once over the data and its scores are reused by all of
them. Only one expert's [batch, seq_len, vocab] logits exist at a time.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F

from hdee.ensemble.experts import ExpertInfo, load_model, read_expert
from hdee.core.errors import EnsembleError
from hdee.core.fsutil import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

if TYPE_CHECKING:
    from hdee.config import ExperimentConfig
    from hdee.core.layout import RunLayout

SPLITS_SCORED = ("test", "val")


def windows_sha256(windows: np.ndarray) -> str:
    """Content hash of evaluation windows (values and shape)."""
    w = np.ascontiguousarray(windows, dtype=np.int64)
    return sha256_bytes(json.dumps(list(w.shape)).encode() + w.tobytes())


def _check_windows(windows: np.ndarray, vocab_size: int, where: str) -> np.ndarray:
    w = np.asarray(windows)
    if w.ndim != 2 or w.shape[1] < 2:
        raise EnsembleError(f"{where}: windows must be [n, seq_len + 1] with seq_len >= 1, got {list(w.shape)}")
    if w.size and (w.min() < 0 or w.max() >= vocab_size):
        bad = int(w.min()) if w.min() < 0 else int(w.max())
        raise EnsembleError(f"{where}: token id {bad} outside the expert's vocabulary of {vocab_size}")
    return w.astype(np.int64, copy=False)


@torch.inference_mode()
def score_model(model: torch.nn.Module, windows: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """log p(x_{t+1} | x_<=t) for every window position: float32 [n, seq_len]."""
    n, width = windows.shape
    out = np.empty((n, width - 1), dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch_size]))
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        out[start : start + len(batch)] = (-nll).numpy()
    return out


def score_expert(expert_dir: str | Path, windows: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Load the expert and score `windows` (int64 [n, seq_len + 1]) -> float32 [n, seq_len]."""
    info = read_expert(expert_dir)
    windows = _check_windows(windows, info.vocab_size, str(expert_dir))
    if len(windows) == 0:
        return np.zeros((0, windows.shape[1] - 1), dtype=np.float32)
    return score_model(load_model(info.path), windows, batch_size)


def _cache_key(info: ExpertInfo, windows: np.ndarray) -> dict:
    return {
        "expert_sha256": info.weights_sha256(),
        "windows_sha256": windows_sha256(windows),
        "shape": [int(windows.shape[0]), int(windows.shape[1] - 1)],
    }


def sidecar_path(cache_path: Path) -> Path:
    return cache_path.with_suffix(".json")


def load_cached(cache_path: Path, key: dict) -> np.ndarray | None:
    """The cached scores when the sidecar matches `key` and the file is intact, else None."""
    side = sidecar_path(cache_path)
    if not (cache_path.is_file() and side.is_file()):
        return None
    try:
        stored = json.loads(side.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if {k: stored.get(k) for k in key} != key or stored.get("npy_sha256") != sha256_file(cache_path):
        return None
    arr = np.load(cache_path, allow_pickle=False)
    if arr.dtype != np.float32 or list(arr.shape) != key["shape"]:
        return None
    return arr


def score_cached(
    expert_dir: str | Path,
    windows: np.ndarray,
    cache_path: str | Path,
    batch_size: int = 8,
    scorer: Callable[[str | Path, np.ndarray, int], np.ndarray] = score_expert,
) -> np.ndarray:
    """Scores from `cache_path` (.npy) when still valid, else computed and written atomically.

    The JSON sidecar beside it records the expert's weights sha256, the windows' sha256, the
    shape and the .npy's own sha256, so a changed expert, changed windows or a torn write all
    lead to rescoring instead of stale numbers.
    """
    cache_path = Path(cache_path)
    info = read_expert(expert_dir)
    windows = _check_windows(windows, info.vocab_size, str(expert_dir))
    key = _cache_key(info, windows)
    cached = load_cached(cache_path, key)
    if cached is not None:
        return cached
    scores = np.ascontiguousarray(scorer(expert_dir, windows, batch_size), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, scores, allow_pickle=False)
    data = buf.getvalue()
    atomic_write_bytes(cache_path, data)
    atomic_write_json(sidecar_path(cache_path), {**key, "npy_sha256": sha256_bytes(data)})
    return scores


# ------------------------------------------------------------------ run-level scoring


def read_tokens(layout: "RunLayout", domain: str, split: str) -> np.ndarray:
    """Token ids of one domain split from the run's shards."""
    from hdee.data.shards import read_split

    return read_split(layout.domain_dir(domain), split)


TokenReader = Callable[["RunLayout", str, str], np.ndarray]


def eval_token_cap(cfg: "ExperimentConfig") -> int | None:
    return cfg.eval.max_tokens or cfg.data.max_eval_tokens


def domain_windows(
    layout: "RunLayout", domain: str, split: str, cfg: "ExperimentConfig", reader: TokenReader = read_tokens
) -> np.ndarray:
    """The windows scored for one domain split: the capped test split, or the first
    `eval.prior_sequences + eval.select_sequences` windows of the val split (the prior is
    estimated on the first ones, the main table's method chosen on the rest: `split_val`)."""
    from hdee.data.loaders import eval_windows

    seq_len = cfg.data.seq_len
    tokens = reader(layout, domain, split)
    if split == "test":
        return eval_windows(tokens, seq_len, eval_token_cap(cfg))
    if split == "val":
        n = cfg.eval.prior_sequences + cfg.eval.select_sequences
        cap = eval_token_cap(cfg)
        return eval_windows(tokens, seq_len, n * seq_len if cap is None else min(cap, n * seq_len))
    raise EnsembleError(f"{domain}: cannot score split {split!r} (scored: {', '.join(SPLITS_SCORED)})")


def stacked_scores(layout: "RunLayout", ids: list[str], domain: str, split: str) -> np.ndarray:
    """The cached log-probs of experts `ids` on one domain split, stacked [K, n, T]."""
    return np.stack([np.load(layout.score_path(e, domain, split), allow_pickle=False) for e in ids])


def split_val(val_lp: np.ndarray, prior_sequences: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the val windows [K, m, T] -> (the prior's windows, the method-selection windows);
    disjoint, so no method is chosen on the windows its prior was estimated on."""
    return val_lp[:, :prior_sequences], val_lp[:, prior_sequences:]


def lazy_scorer() -> Callable[[str | Path, np.ndarray, int], np.ndarray]:
    """A `score_cached` scorer for one expert that loads its model on the first cache miss only
    and reuses it for every later call (several domains or splits of the same expert)."""
    loaded: list[torch.nn.Module] = []

    def scorer(path: str | Path, windows: np.ndarray, batch_size: int) -> np.ndarray:
        if not loaded:
            loaded.append(load_model(path))
        return score_model(loaded[0], windows, batch_size)

    return scorer


def score_domains(
    layout: "RunLayout",
    expert_id: str,
    expert_dir: str | Path,
    domains: list[str],
    cfg: "ExperimentConfig",
    reader: TokenReader = read_tokens,
) -> None:
    """One executor job: cache the expert's scores on each domain's test windows and val windows
    (the prior's, then the method choice's). The model is loaded once for every domain and split,
    and not at all when everything is cached; each (domain, split) is its own cache file, so a
    killed job resumes where it stopped."""
    scorer = lazy_scorer()
    for domain in domains:
        for split in SPLITS_SCORED:
            windows = domain_windows(layout, domain, split, cfg, reader)
            score_cached(expert_dir, windows, layout.score_path(expert_id, domain, split), cfg.eval.batch_size, scorer)
