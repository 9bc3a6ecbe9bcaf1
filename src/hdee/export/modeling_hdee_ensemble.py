"""An hdee ensemble as one Hugging Face causal LM: several networks of any width, one mixture.

Self-contained on purpose (torch and transformers only): `hdee export` copies this file and
`configuration_hdee_ensemble.py` into the model directory, so `AutoModelForCausalLM.from_pretrained(
dir, trust_remote_code=True)` loads it where hdee is not installed; inside hdee, `import hdee`
registers the same classes with the Auto classes.

`forward` returns the mixture's log-probabilities as `logits` (already normalised: log_softmax
leaves them as they are). At position t the experts are weighted by what they gave the tokens
x_1..x_t of the same sequence, as hdee mixes an evaluation window (docs/ensembling.md):

* uniform: equal weights; prefix-posterior: prod_{s<=t} p_k(x_s); prevtoken-posterior: p_k(x_t);
  cached-prior(-prevtoken): the same times the prior fixed at export; top-k: prefix weights of
  the k heaviest experts; product: the normalised geometric mean of the whole distributions.
* routed-top<k>: positions t < R come from the prefix model; the router reads x_0..x_{R-1} and
  picks k experts, mixed from position R on by their prefix posterior over the whole sequence.

Each network keeps its own KV cache inside `HdeeEnsembleCache`, which `generate` hands back
between steps; an expert chosen late (routing) first reads the tokens it has not seen.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_hdee_ensemble import NEEDS_PRIOR, HdeeEnsembleConfig, routed_k

_OUT_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class _Stream:
    """One network along the batch's sequence: its KV cache, how many tokens it has read, the
    log-prob it gave each token read (float64 [B, fed], 0 for the first), its last distribution."""

    def __init__(self) -> None:
        self.kv = None
        self.fed = 0
        self.true: torch.Tensor | None = None
        self.last: torch.Tensor | None = None


class HdeeEnsembleCache:
    """What generation carries between steps: the tokens so far and each network's stream."""

    is_compileable = False
    is_croppable = False

    def __init__(self) -> None:
        self.ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.streams: dict[int, _Stream] = {}
        self.choice: torch.Tensor | None = None  # routed: [B, k] model indices

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.ids is None else int(self.ids.shape[1])


def tfidf_features(prefixes: torch.Tensor, idf: torch.Tensor) -> torch.Tensor:
    """Sublinear tf (1 + log count) x idf of each row's token ids, rows l2-normalised: float64 [B, V]."""
    counts = torch.zeros(prefixes.shape[0], idf.shape[0], dtype=torch.float64, device=prefixes.device)
    counts.scatter_add_(1, prefixes, torch.ones_like(prefixes, dtype=torch.float64))
    x = torch.where(counts > 0, (1.0 + torch.log(counts.clamp_min(1.0))) * idf.double(), torch.zeros_like(counts))
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)


def cosine_top(features: torch.Tensor, centroids: torch.Tensor, k: int) -> torch.Tensor:
    """The k centroids most similar to each row, best first, ties to the lower index: long [B, k]."""
    c = centroids.double()
    c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-300)
    f = features / features.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return torch.sort(-(f @ c.T), dim=1, stable=True).indices[:, :k]


class HdeeEnsemblePreTrainedModel(PreTrainedModel):
    config_class = HdeeEnsembleConfig
    base_model_prefix = "hdee_ensemble"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """Every weight comes from the export; nothing to initialise."""


class HdeeEnsembleForCausalLM(HdeeEnsemblePreTrainedModel, GenerationMixin):
    def __init__(self, config: HdeeEnsembleConfig):
        super().__init__(config)
        nets = []
        for spec in config.models:
            spec = dict(spec)
            sub = AutoConfig.for_model(spec.pop("model_type"), **spec)
            nets.append(AutoModelForCausalLM.from_config(sub))
        self.models = nn.ModuleList(nets)
        self.routed = routed_k(config.method)
        rt = config.routing or {}
        if self.routed and rt.get("kind"):
            self.register_buffer("router_centroids", torch.zeros(len(config.members), int(rt["features"])))
            if rt["kind"] == "tfidf":
                self.register_buffer("router_idf", torch.zeros(int(rt["features"])))
        self.post_init()

    def post_init(self) -> None:
        """As transformers' own, and the networks' tied weights (an output layer that shares the input
        embedding) and unsplittable modules too: they sit one level down, inside `models`."""
        super().post_init()
        for i, net in enumerate(self.models):
            tied = getattr(net, "all_tied_weights_keys", None) or {}
            if isinstance(getattr(self, "all_tied_weights_keys", None), dict):
                self.all_tied_weights_keys.update({f"models.{i}.{k}": f"models.{i}.{v}" for k, v in tied.items()})
            if isinstance(self._no_split_modules, set):
                self._no_split_modules.update(getattr(net, "_no_split_modules", None) or [])

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # each network keeps its own cache, inside HdeeEnsembleCache

    # ------------------------------------------------------------------ one network

    def _advance(self, state: HdeeEnsembleCache, i: int, upto: int, use_cache: bool) -> torch.Tensor:
        """Feed network i the tokens it has not read up to `upto`: its log-probs there [B, n, V]."""
        s = state.streams.setdefault(i, _Stream())
        ids = state.ids
        new = ids[:, s.fed : upto]
        model = self.models[i]
        kw = {}
        if state.mask is not None:
            kw["attention_mask"] = state.mask[:, :upto]
        if use_cache:
            if s.kv is not None:
                name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
                kw[name] = s.kv
            out = model(input_ids=new, use_cache=True, **kw)
            kv = getattr(out, "cache", None)
            s.kv = kv if kv is not None else getattr(out, "past_key_values", None)
            logits = out.logits
        else:  # no cache: read the whole sequence again, keep the new positions
            logits = model(input_ids=ids[:, :upto], use_cache=False, **kw).logits[:, s.fed :]
        logp = F.log_softmax(logits.float(), dim=-1)
        prev = logp[:, :-1] if s.last is None else torch.cat([s.last[:, None], logp[:, :-1]], dim=1)
        true = prev.gather(-1, new[:, new.shape[1] - prev.shape[1] :, None])[..., 0].double()
        if s.last is None:
            true = torch.cat([true.new_zeros(true.shape[0], 1), true], dim=1)
        if state.mask is not None:  # a padding token, or the first token after padding, tells nothing
            m = state.mask.double()
            both = m[:, s.fed : upto] * torch.cat([torch.zeros_like(m[:, :1]), m[:, :-1]], dim=1)[:, s.fed : upto]
            true = true * both
        s.true = true if s.true is None else torch.cat([s.true, true], dim=1)
        s.last, s.fed = logp[:, -1], upto
        return logp

    # ------------------------------------------------------------------ the mixture

    def _log_weights(self, true: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Normalised log-weights [K, B, n] of the members at positions start..end-1 (float64)."""
        method, k = self.config.method, true.shape[0]
        if method in NEEDS_PRIOR:
            prior = torch.tensor(self.config.log_prior, dtype=torch.float64, device=true.device)
        else:
            prior = torch.full((k,), -math.log(k), dtype=torch.float64, device=true.device)
        prior = (prior - torch.logsumexp(prior, 0))[:, None, None]
        if method == "uniform":
            logw = prior.expand(k, true.shape[1], end - start)
        elif method in ("prevtoken-posterior", "cached-prior-prevtoken"):
            logw = prior + true[:, :, start:end]
        else:
            logw = prior + torch.cumsum(true, dim=2)[:, :, start:end]
        logw = logw - torch.logsumexp(logw, 0, keepdim=True)
        if method == "top-k" and self.config.mix_top_k < k:
            order = torch.sort(-logw, dim=0, stable=True).indices
            keep = torch.zeros_like(logw, dtype=torch.bool).scatter_(0, order[: self.config.mix_top_k], True)
            logw = torch.where(keep, logw, torch.full_like(logw, -math.inf))
            logw = logw - torch.logsumexp(logw, 0, keepdim=True)
        return logw

    @staticmethod
    def _mix(logps: list[torch.Tensor], logw: torch.Tensor) -> torch.Tensor:
        acc = None
        for lp, w in zip(logps, logw):
            term = lp + w.to(lp.dtype)[..., None]
            acc = term if acc is None else torch.logaddexp(acc, term)
        return acc

    def _route(self, state: HdeeEnsembleCache, rows: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The k members chosen for each of `rows` from its first R real tokens: long [len(rows), k]."""
        rt, members, k = self.config.routing, self.config.members, self.routed
        r = int(rt["route_tokens"])
        if len(members) == 1 or k >= len(members):
            return torch.arange(min(k, len(members)), device=rows.device).repeat(len(rows), 1)
        prefixes = torch.stack([state.ids[b, int(pad[b]) : int(pad[b]) + r] for b in rows.tolist()])
        if rt["kind"] == "tfidf":
            features = tfidf_features(prefixes, self.router_idf)
        else:
            h = self.models[int(rt["prefix_model"])].base_model(input_ids=prefixes).last_hidden_state
            features = h.double().mean(dim=1)
        return cosine_top(features, self.router_centroids, k)

    def _routed(self, state: HdeeEnsembleCache, start: int, end: int, use_cache: bool) -> torch.Tensor:
        """routed-top<k> at positions start..end-1: the prefix model's log-probs where a row has read
        fewer than R real tokens, the chosen members' prefix posterior from there on."""
        members, n, k = self.config.members, end - start, self.routed
        r, pm = int(self.config.routing["route_tokens"]), int(self.config.routing["prefix_model"])
        b = state.ids.shape[0]
        pad = torch.zeros(b, dtype=torch.long, device=state.ids.device)
        if state.mask is not None:  # left padding: a row's own positions start after it
            pad = (state.mask.cumsum(dim=1) == 0).sum(dim=1)
        real = torch.arange(start, end, device=pad.device)[None, :] - pad[:, None]
        from_prefix = real < r
        out = None
        if state.choice is None:
            state.choice = torch.full((b, min(k, len(members))), -1, dtype=torch.long, device=pad.device)
        todo = ((state.choice[:, 0] < 0) & (end - pad > r)).nonzero()[:, 0]
        if len(todo):
            state.choice[todo] = self._route(state, todo, pad)
        decided = state.choice[:, 0] >= 0
        if bool((~from_prefix).any()):
            chosen = torch.where(decided[:, None], state.choice, state.choice[decided][0])
            got = {int(j): self._advance(state, members[int(j)], end, use_cache)[:, -n:] for j in chosen.unique()}
            logps, trues = [], []
            for j in range(chosen.shape[1]):
                picks = chosen[:, j].tolist()
                logps.append(torch.stack([got[c][row] for row, c in enumerate(picks)]))
                trues.append(torch.stack([state.streams[members[c]].true[row] for row, c in enumerate(picks)]))
            out = self._mix(logps, self._log_weights(torch.stack(trues), start, end))
        if bool(from_prefix.any()):
            upto = min(end, int((pad + r).max()))
            pre = self._advance(state, pm, upto, use_cache)[:, -(upto - start) :]
            if out is None:
                return pre
            head = out[:, : upto - start]
            out[:, : upto - start] = torch.where(from_prefix[:, : upto - start, None], pre, head)
        return out

    def _mixture(self, state: HdeeEnsembleCache, start: int, end: int, use_cache: bool) -> torch.Tensor:
        """The mixture's log-probs [B, end-start, V] at positions start..end-1."""
        if self.routed:
            return self._routed(state, start, end, use_cache)
        members, n = self.config.members, end - start
        logps = [self._advance(state, i, end, use_cache)[:, -n:] for i in members]
        if self.config.method == "product":
            return F.log_softmax(torch.stack(logps).mean(0), dim=-1)
        true = torch.stack([state.streams[i].true for i in members])
        return self._mix(logps, self._log_weights(true, start, end))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: HdeeEnsembleCache | None = None,
        past_key_values: HdeeEnsembleCache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if input_ids is None:
            raise ValueError("hdee_ensemble takes input_ids: each expert embeds the tokens with its own embedding")
        state = cache if cache is not None else past_key_values
        if not isinstance(state, HdeeEnsembleCache):
            state = HdeeEnsembleCache()
        use_cache = bool(use_cache)
        start = state.get_seq_length()
        state.ids = input_ids if state.ids is None else torch.cat([state.ids, input_ids], dim=1)
        end = state.ids.shape[1]
        if attention_mask is not None:
            if attention_mask.shape[1] != end:  # only the new tokens' mask
                before = state.mask if state.mask is not None else torch.ones_like(state.ids[:, :start])
                attention_mask = torch.cat([before, attention_mask], dim=1)
            state.mask = None if bool(attention_mask.all()) and state.mask is None else attention_mask
        elif state.mask is not None:
            state.mask = torch.cat([state.mask, torch.ones_like(input_ids)], dim=1)
        logits = self._mixture(state, start, end, use_cache)
        loss = None
        if labels is not None:
            loss = F.nll_loss(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_OUT_CACHE: state if use_cache else None})


def register_auto_classes() -> None:
    """Make `AutoConfig`/`AutoModelForCausalLM` know `hdee_ensemble` without remote code."""
    try:
        AutoConfig.register(HdeeEnsembleConfig.model_type, HdeeEnsembleConfig, exist_ok=True)
        AutoModelForCausalLM.register(HdeeEnsembleConfig, HdeeEnsembleForCausalLM, exist_ok=True)
    except TypeError:  # transformers without exist_ok
        AutoConfig.register(HdeeEnsembleConfig.model_type, HdeeEnsembleConfig)
        AutoModelForCausalLM.register(HdeeEnsembleConfig, HdeeEnsembleForCausalLM)
