"""Routed ensembles (`routed-top<k>`): route on a window's first R tokens, run only k experts.

On each window of T tokens, positions t < R (predicting x_1..x_R) are scored by the prefix
model (the cheapest seed model unless `routing.prefix_model` names a size). The router reads
x_0..x_{R-1} and picks k experts; from position R on the mixture is the prefix posterior over
those k (uniform prior, weights from the likelihood of the whole window so far, routing prefix
included), so with k = K it equals `prefix-posterior` there. With k >= K nothing is routed.

Routers are built per ensemble from each expert's own domain (its `hdee.json` `domain`), train
split only, and saved under `routers/` named by a hash of everything they were built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.special import logsumexp

from hdee.ensemble.experts import ExpertInfo, load_model, read_expert
from hdee.ensemble.inference_flops import RoutedCost, total_params, window_flops
from hdee.ensemble.mixing import prefix_posterior
from hdee.ensemble.previous_context import cascade_mix, context_loglik, previous_contexts, scores_by_length
from hdee.ensemble.routers import (
    Router,
    fit_temperature,
    load_router,
    relative_dir,
    resolve_dir,
    save_router,
    top_experts,
)
from hdee.core.errors import EnsembleError
from hdee.core.fsutil import sha256_bytes
from hdee.registry import MIXING_METHODS, ROUTERS

if TYPE_CHECKING:
    from hdee.config import ExperimentConfig
    from hdee.ensemble.generate import Generation
    from hdee.core.layout import RunLayout

TokenReader = Callable[["RunLayout", str, str], np.ndarray]


def routed_mix(lp: np.ndarray, prefix_lp: np.ndarray, choice: np.ndarray, route_tokens: int) -> np.ndarray:
    """Mixture log-probs [n, T]: the prefix model's before `route_tokens`, the prefix posterior
    over each window's chosen experts (`choice` int [n, k] into lp's K) from there on."""
    lp = np.asarray(lp, dtype=np.float64)
    choice = np.asarray(choice, dtype=np.int64)
    if lp.ndim != 3 or choice.ndim != 2 or choice.shape[0] != lp.shape[1]:
        raise EnsembleError(f"routing choices {list(choice.shape)} do not match {lp.shape[1]} windows")
    chosen = np.take_along_axis(lp, choice.T[:, :, None], axis=0)  # [k, n, T]
    out = prefix_posterior(chosen)
    out[:, :route_tokens] = np.asarray(prefix_lp, dtype=np.float64)[:, :route_tokens]
    return out


def soft_mix(lp: np.ndarray, prefix_lp: np.ndarray, choice: np.ndarray, log_w: np.ndarray, route_tokens: int) -> np.ndarray:
    """`routed-soft-top<k>` [n, T]: the prefix model's log-probs before `route_tokens`, then each
    window's chosen experts mixed with the router's fixed weights `log_w` [n, k] (c-BTM)."""
    lp = np.asarray(lp, dtype=np.float64)
    chosen = np.take_along_axis(lp, np.asarray(choice, dtype=np.int64).T[:, :, None], axis=0)  # [k, n, T]
    out = logsumexp(np.asarray(log_w, dtype=np.float64).T[:, :, None] + chosen, axis=0)
    out[:, :route_tokens] = np.asarray(prefix_lp, dtype=np.float64)[:, :route_tokens]
    return out


# ------------------------------------------------------------------ the prefix model


def pick_prefix_model(cfg: "ExperimentConfig", infos: Mapping[str, ExpertInfo], ensemble: Sequence[str]) -> tuple[str, str]:
    """(id, why) of the model that scores routing prefixes: the seed of size `routing.prefix_model`,
    else the seed with the fewest parameters, else (a run without seed models) the smallest expert."""
    seeds = {eid: i for eid, i in infos.items() if i.record.kind == "seed"}
    want = cfg.routing.prefix_model
    if want is not None:
        match = [eid for eid, i in seeds.items() if i.record.size_name == want]
        if not match:
            raise EnsembleError(f"routing.prefix_model {want!r}: the run has no seed model of that size")
        return match[0], f"seed model of size {want} (routing.prefix_model)"
    if seeds:
        eid = min(seeds, key=lambda e: (total_params(seeds[e]), e))
        return eid, "the cheapest seed model"
    eid = min(ensemble, key=lambda e: (total_params(infos[e]), e))
    return eid, "the cheapest expert of the ensemble (the run has no seed model)"


# ------------------------------------------------------------------ building routers in a run


def router_prefixes(cfg: "ExperimentConfig", layout: "RunLayout", domain: str, reader: TokenReader,
                    tokens: int | None = None) -> np.ndarray:
    """The first R tokens (or `tokens`) of up to `routing.train_windows` windows of the domain's train split."""
    from hdee.data.loaders import eval_windows

    stream = reader(layout, domain, "train")
    windows = eval_windows(stream, cfg.data.seq_len, cfg.routing.train_windows * cfg.data.seq_len)
    return np.ascontiguousarray(windows[:, : tokens or cfg.route_tokens], dtype=np.int64)


def _expert_domain(info: ExpertInfo) -> str:
    domain = info.record.domain
    if not domain:
        raise EnsembleError(f"{info.path}: hdee.json names no training domain; a router needs each expert's own domain")
    return domain


def ensure_router(
    cfg: "ExperimentConfig",
    layout: "RunLayout",
    ids: Sequence[str],
    infos: Mapping[str, ExpertInfo],
    prefix_id: str,
    reader: TokenReader,
    prefix_model: Callable[[], torch.nn.Module],
) -> tuple[Router, Path]:
    """The run's router for these experts (kind `routing.router`), reused when its file is intact,
    else built from train splits only and written to `routers/<kind>-<hash>.json`."""
    kind, r = cfg.routing.router, cfg.route_tokens
    domains = [_expert_domain(infos[e]) for e in ids]
    spec = ROUTERS.get(kind).cls
    idf_domains = list(cfg.seed_domains) if spec.shared_data else []
    width = cfg.data.seq_len if getattr(spec, "fit_tokens", "prefix") == "window" else r
    prefixes = {d: router_prefixes(cfg, layout, d, reader, width) for d in dict.fromkeys([*domains, *idf_domains])}
    for e, d in zip(ids, domains):
        if len(prefixes[d]) == 0:
            raise EnsembleError(f"{layout.domain_dir(d)}: no train windows of {cfg.data.seq_len + 1} tokens to route expert {e}")
    data_sha = {d: sha256_bytes(p.tobytes() + str(p.shape).encode()) for d, p in prefixes.items()}
    key = {
        "fit": 2,  # 2: with a softmax temperature fitted on held-out train prefixes
        "kind": kind,
        "route_tokens": r,
        "experts": [[e, infos[e].weights_sha256(), d, data_sha[d]] for e, d in zip(ids, domains)],
        "prefix_model": [prefix_id, infos[prefix_id].weights_sha256()],
        "idf_domains": [[d, data_sha[d]] for d in idf_domains],
    }
    version = sha256_bytes(repr(key).encode())[:16]
    path = layout.router_path(kind, version)
    if path.is_file():
        try:
            router = load_router(path)
            if router.meta.get("version") == version:
                return router, path
        except EnsembleError:
            pass  # torn or stale: rebuilt below
    expert_prefixes = [prefixes[d] for d in domains]
    shared = np.concatenate([prefixes[d] for d in idf_domains]) if idf_domains else np.zeros((0, r), dtype=np.int64)
    if spec.shared_data and len(shared) == 0:
        raise EnsembleError(f"seed domains {', '.join(idf_domains)}: no train windows to fit the {kind} router")
    vocab, model = infos[ids[0]].vocab_size, prefix_model() if spec.needs_prefix_model else None
    router = spec.fit(expert_prefixes, shared, vocab, r, model)
    # the temperature of soft routing: a router fitted on every other train window scores the rest
    half = spec.fit([p[::2] for p in expert_prefixes], shared, vocab, r, model)
    temperature = fit_temperature([half.scores(p[1::2, :r], model) for p in expert_prefixes])
    router.meta = {
        "version": version,
        "temperature": temperature,
        "experts": [
            {"id": e, "domain": d, "weights_sha256": infos[e].weights_sha256(), "dir": relative_dir(infos[e].path, path)}
            for e, d in zip(ids, domains)
        ],
        "prefix_model": {
            "id": prefix_id,
            "weights_sha256": infos[prefix_id].weights_sha256(),
            "dir": relative_dir(infos[prefix_id].path, path),
        },
        "idf_domains": idf_domains,
        "train_windows": {d: int(len(p)) for d, p in prefixes.items()},
    }
    save_router(router, path)
    return router, path


class RoutedEvaluator:
    """Routed mixtures and their costs for `evaluate`, from the cached per-token scores.

    Evaluation has every expert's scores anyway, so mixing the chosen experts' cached scores is
    exactly what running only those experts would give; the FLOPs count only what they run.
    """

    def __init__(self, cfg: "ExperimentConfig", layout: "RunLayout", infos: Mapping[str, ExpertInfo], reader: TokenReader):
        self.cfg, self.layout, self.infos, self.reader = cfg, layout, infos, reader
        self._models: dict[str, torch.nn.Module] = {}
        self._setups: dict[tuple[str, ...], dict[str, Any]] = {}
        self._scores: dict[tuple, np.ndarray] = {}  # router scores per (ensemble, domain, split[, "previous"])

    def _model(self, eid: str) -> torch.nn.Module:
        if eid not in self._models:
            self._models[eid] = load_model(self.infos[eid].path)
        return self._models[eid]

    def setup(self, ids: Sequence[str]) -> dict[str, Any]:
        """What results.json records about routing for this ensemble (builds its router if needed)."""
        key = tuple(ids)
        if key not in self._setups:
            prefix_id, why = pick_prefix_model(self.cfg, self.infos, ids)
            rec: dict[str, Any] = {"router": None, "router_file": None, "prefix_model": prefix_id,
                                   "prefix_model_reason": why, "route_tokens": self.cfg.route_tokens, "top1_share": {}}
            router = None
            if len(ids) > 1:
                router, path = ensure_router(self.cfg, self.layout, ids, self.infos, prefix_id, self.reader,
                                             lambda: self._model(prefix_id))
                rec.update(router=router.kind, router_file=str(path.relative_to(self.layout.root)))
            self._setups[key] = {"record": rec, "router": router}
        return self._setups[key]["record"]

    def router_of(self, ids: Sequence[str]) -> Router | None:
        """This ensemble's router (None for a single expert), built if needed."""
        self.setup(ids)
        return self._setups[tuple(ids)]["router"]

    def _prefix_scores(self, ids: Sequence[str], domain: str, windows: np.ndarray, router: Router,
                       split: str = "test") -> np.ndarray:
        """The router's scores of each window's first R tokens (memoised per ensemble, domain and split)."""
        rec, skey = self._setups[tuple(ids)]["record"], (tuple(ids), domain, split)
        if skey not in self._scores:
            model = self._model(rec["prefix_model"]) if router.kind_spec.needs_prefix_model else None
            self._scores[skey] = router.scores(windows[:, : self.cfg.route_tokens], model)
            if split == "test":
                top1 = self._scores[skey].argmax(axis=1)
                rec["top1_share"][domain] = {e: float(np.mean(top1 == i)) for i, e in enumerate(ids)}
        return self._scores[skey]

    def mix(self, ids: Sequence[str], domain: str, windows: np.ndarray, lp: np.ndarray, k: int,
            context: str = "prefix", weights: str = "posterior", split: str = "test") -> tuple[np.ndarray, RoutedCost]:
        """(mixture log-probs [n, T], cost) of a routed method on one domain's windows of `split`:
        routed on each window's prefix (`context="prefix"`) or the text before it (`"previous"`),
        its k experts weighed by their posterior or by the router's softmax (`weights="router"`)."""
        rec, router = self.setup(ids), self.router_of(ids)
        r, n = self.cfg.route_tokens, lp.shape[1]
        prefix_id = rec["prefix_model"]
        prefix_lp = np.load(self.layout.score_path(prefix_id, domain, split), allow_pickle=False)
        soft = weights == "router" and router is not None
        if router is None or (k >= len(ids) and not soft):
            choice = np.tile(np.arange(min(k, len(ids))), (n, 1))
            cost = RoutedCost(window_flops(self.infos[prefix_id], r), 0.0, choice)
            return routed_mix(lp, prefix_lp, choice, r), cost
        scores = self._prefix_scores(ids, domain, windows, router, split)
        choice = top_experts(scores, min(k, len(ids)))
        if context == "previous":
            return self._mix_previous(ids, domain, windows, lp, prefix_lp, choice, router, scores if soft else None, split)
        cost = RoutedCost(window_flops(self.infos[prefix_id], r), router.flops_per_window(), choice)
        if soft:
            return soft_mix(lp, prefix_lp, choice, router.log_weights(scores, choice), r), cost
        return routed_mix(lp, prefix_lp, choice, r), cost

    def _mix_previous(self, ids: Sequence[str], domain: str, windows: np.ndarray, lp: np.ndarray,
                      prefix_lp: np.ndarray, choice: np.ndarray, router: Router,
                      soft_scores: np.ndarray | None, split: str) -> tuple[np.ndarray, RoutedCost]:
        """`routed-prev-[soft-]top<k>`: windows with a previous context are routed on it (for k > 1
        a cascade, or the router's weights when `soft_scores`, the prefix scores, are given); the
        others keep `choice`, their own prefix's routing."""
        from hdee.data.shards import eos_of

        r, k, prefix_id = self.cfg.route_tokens, choice.shape[1], self._setups[tuple(ids)]["record"]["prefix_model"]
        eos = eos_of(self.layout.domain_dir(domain))  # None (text without shards): contexts run across documents
        ctx = previous_contexts(windows, -1 if eos is None else eos, self.cfg.routing.context_tokens)
        model = self._model(prefix_id) if router.kind_spec.needs_prefix_model else None
        has = ctx.length > 0
        skey = (tuple(ids), domain, split, "previous")  # the same contexts for every k and weighting
        if skey not in self._scores:
            self._scores[skey] = scores_by_length(lambda batch: router.scores(batch, model), windows, ctx, len(ids))
        ctx_scores = self._scores[skey]
        choice = np.where(has[:, None], top_experts(ctx_scores, k), choice)
        cascade_k = k > 1 and soft_scores is None
        if soft_scores is not None:
            log_w = router.log_weights(np.where(has[:, None], ctx_scores, soft_scores), choice)
            out = soft_mix(lp, prefix_lp, choice, log_w, 0)
            out[~has, :r] = np.asarray(prefix_lp, dtype=np.float64)[~has, :r]  # routed on their own prefix
        else:
            start = context_loglik(lp, ctx, choice) if cascade_k else np.zeros(choice.shape)
            out = routed_mix(lp, prefix_lp, choice, r)
            out[has] = cascade_mix(lp[:, has], choice[has], start[has])
        # what ran on each window: the prefix model (its prefix, or the context for a hidden-state
        # router), the router, and for a cascade the chosen experts over the context
        prefix, routing, cascade = [], [], []
        for row, length in zip(choice, ctx.length.tolist()):
            if not length:  # routed on its own prefix
                prefix.append(window_flops(self.infos[prefix_id], r))
                routing.append(router.flops_per_window())
                cascade.append(0.0)
                continue
            prefix.append(window_flops(self.infos[prefix_id], length) if model is not None else 0.0)
            routing.append(router.flops_per_window(length))
            cascade.append(sum(window_flops(self.infos[ids[j]], length) for j in row) if cascade_k else 0.0)
        cost = RoutedCost(float(np.mean(prefix)), float(np.mean(routing)), choice, float(np.mean(cascade)))
        return out, cost


# ------------------------------------------------------------------ generation


def generate_routed(router_file: str | Path, prompt: str | Sequence[int], method: str = "routed-top1", *,
                    tokenizer: Any = None, **generate_kwargs: Any) -> tuple["Generation", list[str]]:
    """Route the prompt's first R tokens (all of it when shorter, or for `routed-prev-top<k>`), load
    only the k chosen experts and sample from their prefix-posterior mixture. Returns the generation
    and the chosen ids."""
    from hdee.data.tokenizer import load_hf_tokenizer
    from hdee.ensemble.ensemble import Ensemble

    entry = MIXING_METHODS.find(method)
    k = entry.routed if entry is not None else 0
    if not k:
        raise EnsembleError(f"--router needs a routed method (routed-top<k>), got {method!r}")
    if entry.weights == "router":
        raise EnsembleError(f"{method}: soft routing is scored only; generate with routed-top{k} or routed-prev-top{k}")
    router = load_router(router_file)
    dirs = [resolve_dir(e.get("dir", ""), router_file) for e in router.meta["experts"]]
    for e, d in zip(router.meta["experts"], dirs):
        info = read_expert(d)
        if info.weights_sha256() != e.get("weights_sha256"):
            raise EnsembleError(f"{d}: weights differ from those router {router_file} was built for (expert {e['id']})")
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_hf_tokenizer(tokenizer, require_eos=False)
    if isinstance(prompt, str):
        if tokenizer is None:
            raise EnsembleError("a text prompt needs a tokenizer (tokenizer.json)")
        prompt = tokenizer.encode(prompt, add_special_tokens=False)
    ids = [int(t) for t in prompt]
    if not ids:
        raise EnsembleError("generation needs a prompt of at least one token")
    model = None
    if router.kind_spec.needs_prefix_model and k < len(dirs):
        pm = router.meta.get("prefix_model") or {}
        pdir = resolve_dir(pm.get("dir", ""), router_file)
        if read_expert(pdir).weights_sha256() != pm.get("weights_sha256"):
            raise EnsembleError(f"{pdir}: weights differ from the prefix model router {router_file} was built with")
        model = load_model(pdir)
    # routed-top<k> routes on the prompt's first R tokens; routed-prev-top<k> on all of it (the text before)
    routed_on = ids if entry.context == "previous" else ids[: router.route_tokens]
    chosen = router.route(np.asarray([routed_on]), k, model)[0] if k < len(dirs) else np.arange(len(dirs))
    ens = Ensemble([dirs[i] for i in chosen])
    out = ens.generate(ids, method="prefix-posterior", tokenizer=tokenizer, **generate_kwargs)
    return out, [router.expert_ids[i] for i in chosen]
