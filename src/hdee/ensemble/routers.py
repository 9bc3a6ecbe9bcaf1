"""Routers: pick experts from the first tokens of a window, each expert described by its own data.

The kinds are registered in `hdee.ensemble.router_kinds` (`hdee.registry.ROUTERS`). The built-ins
are nearest-centroid on cosine similarity, so each expert's centroid is computed from
its own domain's train split alone (no joint training, no test data):

* `tfidf`: sublinear tf-idf over token ids (scikit-learn). The idf comes from the seed models'
  data, which every expert owner already shares; an expert's centroid is the mean of its
  l2-normalised tf-idf vectors.
* `hidden`: the prefix model's final hidden state (after the last norm) averaged over the
  prefix; an expert's centroid is the mean of its normalised vectors.
* `bigram`: a router LM per expert (`hdee.ensemble.router_lm`): the prefix's likelihood under a
  smoothed bigram model of the expert's own train windows.

Every router also has a softmax temperature (`temperature`), fitted on train data only: the
weights of `routed-soft-top<k>` are softmax(score / temperature) over the k chosen experts
(c-BTM's weights; on unit vectors a softmax over cosine similarity is one over squared distance).

A router is two plain files: `<name>.safetensors` (centroids, idf, a kind's tables) and `<name>.json` (kind,
route tokens, the experts' ids, domains and weights sha256, the prefix model, the tensors'
sha256). The tensors are written first and the JSON last, so an existing JSON names a complete
router; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdee.core.errors import EnsembleError
from hdee.core.fsutil import atomic_write_bytes, atomic_write_json, sha256_bytes
from hdee.registry import ROUTERS

FORMAT = 1


def token_ids(prefixes: np.ndarray, vocab: int) -> np.ndarray:
    """A router's input as int64 [n, tokens], refused in one line when it is not that or holds an id
    outside the vocabulary."""
    ids = np.asarray(prefixes, dtype=np.int64)
    if ids.ndim != 2:
        raise EnsembleError(f"router input must be [n, tokens], got {list(ids.shape)}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise EnsembleError(f"router input holds token id {int(ids.max())} outside the vocabulary of {vocab}")
    return ids


def token_counts(prefixes: np.ndarray, vocab: int):
    """Bag of token ids: scipy CSR [n, vocab] of counts, one row per prefix."""
    from scipy.sparse import csr_array

    ids = token_ids(prefixes, vocab)
    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    return csr_array((np.ones(ids.size), (rows, ids.ravel())), shape=(ids.shape[0], vocab))


def tfidf(counts, idf: np.ndarray):
    """Sublinear tf (1 + log count) x idf, rows l2-normalised: `TfidfTransformer(sublinear_tf=True)`
    with a fitted `idf`, written out so that a saved idf vector is all a router needs."""
    from sklearn.preprocessing import normalize

    x = counts.astype(np.float64, copy=True)
    x.data = (1.0 + np.log(x.data)) * idf[x.indices]
    return normalize(x, norm="l2", copy=False)


@torch.inference_mode()
def hidden_means(model: torch.nn.Module, prefixes: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The model's final hidden state averaged over each prefix: float64 [n, hidden]."""
    ids = np.ascontiguousarray(prefixes, dtype=np.int64)
    out = []
    for start in range(0, len(ids), batch_size):
        h = model.base_model(input_ids=torch.from_numpy(ids[start : start + batch_size]), use_cache=False).last_hidden_state
        out.append(h.double().mean(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size))


def unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _centroid(features) -> np.ndarray:
    mean = np.asarray(features.mean(axis=0), dtype=np.float64).ravel()
    return unit_rows(mean)


@dataclass
class Router:
    """Nearest-centroid router over `len(centroids)` experts, in the order of `meta["experts"]`."""

    kind: str
    route_tokens: int
    centroids: np.ndarray  # float32 [K, features], unit rows
    idf: np.ndarray | None = None  # float32 [vocab], tfidf only
    meta: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # a kind's further tensors (bigram counts)
    # what a kind derives from its tensors once per router (never saved)
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def temperature(self) -> float:
        """The softmax temperature of soft routing (1.0 for a router saved without one)."""
        return float(self.meta.get("temperature", 1.0))

    @property
    def expert_ids(self) -> list[str]:
        return [e["id"] for e in self.meta.get("experts", [])]

    @property
    def kind_spec(self) -> type:
        """This router's registered kind (`hdee.ensemble.router_kinds`)."""
        return ROUTERS.get(self.kind).cls

    def features(self, prefixes: np.ndarray, model: torch.nn.Module | None = None):
        return self.kind_spec.features(self, prefixes, model)

    def scores(self, prefixes: np.ndarray, model: torch.nn.Module | None = None) -> np.ndarray:
        """How well each prefix fits each expert, float64 [n, K]: cosine similarity to the expert's
        centroid, or the kind's own `scores` (a router LM: the prefix's log-likelihood)."""
        from sklearn.metrics.pairwise import cosine_similarity

        prefixes = np.asarray(prefixes)
        if len(prefixes) == 0:
            return np.zeros((0, len(self.centroids)))
        own = getattr(self.kind_spec, "scores", None)
        if own is not None:
            return np.asarray(own(self, prefixes, model), dtype=np.float64)
        return cosine_similarity(self.features(prefixes, model), self.centroids.astype(np.float64))

    def log_weights(self, scores: np.ndarray, choice: np.ndarray) -> np.ndarray:
        """Soft routing: log softmax(score / temperature) over each window's chosen experts, [n, k]."""
        from scipy.special import log_softmax

        picked = np.take_along_axis(np.asarray(scores, dtype=np.float64), np.asarray(choice, dtype=np.int64), axis=1)
        return log_softmax(picked / self.temperature, axis=1)

    def route(self, prefixes: np.ndarray, k: int, model: torch.nn.Module | None = None) -> np.ndarray:
        """The k experts of highest similarity per prefix, best first (ties: lower index): int [n, k]."""
        return top_experts(self.scores(prefixes, model), k)

    def flops_per_window(self, tokens: int | None = None) -> float:
        """Arithmetic of one routing decision beyond the prefix model's forward pass (an upper bound),
        on `route_tokens` tokens or on `tokens` (a longer or shorter context)."""
        from dataclasses import replace

        return self.kind_spec.flops_per_window(self if tokens is None else replace(self, route_tokens=int(tokens)))


def top_experts(scores: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise EnsembleError(f"a router picks k >= 1 experts, got {k}")
    order = np.argsort(-np.asarray(scores), axis=1, kind="stable")
    return order[:, :k]


TEMPERATURES = np.geomspace(1e-3, 1e3, 121)


def fit_temperature(held_out: list[np.ndarray]) -> float:
    """The temperature on `TEMPERATURES` that gives held-out prefixes the lowest cross-entropy of
    their own expert: `held_out[k]` [n_k, K] holds the scores of prefixes of expert k's data,
    from a router fitted without them."""
    scores = [np.asarray(s, dtype=np.float64) for s in held_out if len(s)]
    if not scores:
        return 1.0
    from scipy.special import log_softmax

    labels = np.concatenate([np.full(len(s), k) for k, s in enumerate(held_out) if len(s)])
    x = np.concatenate(scores)
    nll = [-log_softmax(x / t, axis=1)[np.arange(len(x)), labels].mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def fit_tfidf(expert_prefixes: list[np.ndarray], idf_prefixes: np.ndarray, vocab: int, route_tokens: int) -> Router:
    """idf from `idf_prefixes` (the shared seed data), one centroid per expert from its own prefixes."""
    from sklearn.feature_extraction.text import TfidfTransformer

    fitted = TfidfTransformer(sublinear_tf=True).fit(token_counts(idf_prefixes, vocab))
    idf = np.asarray(fitted.idf_, dtype=np.float64)
    cents = [_centroid(tfidf(token_counts(p, vocab), idf)) for p in expert_prefixes]
    return Router("tfidf", route_tokens, np.stack(cents).astype(np.float32), idf.astype(np.float32))


def fit_hidden(expert_prefixes: list[np.ndarray], model: torch.nn.Module, route_tokens: int) -> Router:
    cents = [_centroid(unit_rows(hidden_means(model, p))) for p in expert_prefixes]
    return Router("hidden", route_tokens, np.stack(cents).astype(np.float32))


# ------------------------------------------------------------------ files


def tensors_path(json_path: Path) -> Path:
    return Path(json_path).with_suffix(".safetensors")


def save_router(router: Router, json_path: str | Path) -> None:
    from safetensors.numpy import save

    json_path = Path(json_path)
    tensors = {"centroids": np.ascontiguousarray(router.centroids, dtype=np.float32)}
    if router.idf is not None:
        tensors["idf"] = np.ascontiguousarray(router.idf, dtype=np.float32)
    tensors.update({f"table.{name}": np.ascontiguousarray(t) for name, t in router.tables.items()})
    data = save(tensors)
    atomic_write_bytes(tensors_path(json_path), data)
    record = {**router.meta, "format": FORMAT, "kind": router.kind, "route_tokens": router.route_tokens}
    atomic_write_json(json_path, {**record, "tensors_sha256": sha256_bytes(data)})


def load_router(json_path: str | Path) -> Router:
    """A router saved by `save_router`; one-line EnsembleError for anything missing, torn or odd."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(json_path)
    if not path.is_file():
        raise EnsembleError(f"{path}: router file not found")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"{path}: not a router file ({exc})") from None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT or rec.get("kind") not in ROUTERS:
        raise EnsembleError(f"{path}: not a router file (needs format {FORMAT} and kind one of {', '.join(ROUTERS.names())})")
    experts = rec.get("experts")
    if not isinstance(experts, list) or not experts or not all(isinstance(e, dict) and "id" in e for e in experts):
        raise EnsembleError(f"{path}: 'experts' must be a non-empty list of objects with an 'id'")
    if not isinstance(rec.get("route_tokens"), int) or rec["route_tokens"] < 1:
        raise EnsembleError(f"{path}: 'route_tokens' must be a positive integer")
    tpath = tensors_path(path)
    if not tpath.is_file():
        raise EnsembleError(f"{tpath}: missing (the router's tensors)")
    data = tpath.read_bytes()
    if sha256_bytes(data) != rec.get("tensors_sha256"):
        raise EnsembleError(f"{tpath}: checksum does not match {path.name} (corrupt or modified)")
    try:
        tensors = load(data)
    except SafetensorError as exc:
        raise EnsembleError(f"{tpath}: unreadable safetensors: {exc}") from None
    cents, idf = tensors.get("centroids"), tensors.get("idf")
    if cents is None or cents.ndim != 2 or cents.shape[0] != len(experts):
        raise EnsembleError(f"{tpath}: needs 'centroids' of shape [{len(experts)}, features]")
    meta = {k: v for k, v in rec.items() if k not in ("format", "kind", "route_tokens", "tensors_sha256")}
    tables = {name.removeprefix("table."): t for name, t in tensors.items() if name.startswith("table.")}
    router = Router(rec["kind"], rec["route_tokens"], cents, idf, meta, tables)
    if (problem := router.kind_spec.check(router)) is not None:
        raise EnsembleError(f"{tpath}: {problem}")
    return router


def relative_dir(target: str | Path, router_json: str | Path) -> str:
    """`target` as the router file records it: relative to the file's folder (a run dir moves whole)."""
    return os.path.relpath(Path(target).resolve(), Path(router_json).resolve().parent)


def resolve_dir(recorded: str, router_json: str | Path) -> Path:
    return (Path(router_json).resolve().parent / recorded).resolve()
