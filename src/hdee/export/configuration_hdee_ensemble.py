"""Configuration of an exported hdee ensemble (`model_type = "hdee_ensemble"`).

Self-contained on purpose: `hdee export` copies this file into the model directory, where
`AutoConfig.from_pretrained(dir, trust_remote_code=True)` loads it without hdee installed.
It may import only transformers.

`models` holds every network's own config (any HF causal-LM architecture and width);
`members` are the indices of those the mixture mixes; a routed method adds the prefix model
and the router (`routing`). The prior of a cached-prior method is fixed here (`log_prior`,
estimated on `prior_domain` at export time).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

#: methods the exported model computes (and `routed-top<k>` for any k >= 1)
METHODS = (
    "uniform",
    "prefix-posterior",
    "prevtoken-posterior",
    "cached-prior",
    "cached-prior-prevtoken",
    "top-k",
    "product",
)
NEEDS_PRIOR = ("cached-prior", "cached-prior-prevtoken")
ROUTER_KINDS = ("tfidf", "hidden")


def routed_k(method: str) -> int:
    """k of `routed-top<k>`, else 0."""
    tail = method.removeprefix("routed-top")
    return int(tail) if tail != method and tail.isdigit() and int(tail) >= 1 and tail[0] != "0" else 0


class HdeeEnsembleConfig(PretrainedConfig):
    model_type = "hdee_ensemble"

    def __init__(
        self,
        models: list[dict[str, Any]] | None = None,
        members: list[int] | None = None,
        member_names: list[str] | None = None,
        method: str = "prefix-posterior",
        mix_top_k: int = 2,
        log_prior: list[float] | None = None,
        prior_domain: str | None = None,
        routing: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        max_position_embeddings: int | None = None,
        **kwargs: Any,
    ):
        self.models = [dict(m) for m in (models or [])]
        self.members = list(members) if members is not None else list(range(len(self.models)))
        self.member_names = list(member_names or [])
        self.method = method
        self.mix_top_k = int(mix_top_k)
        self.log_prior = None if log_prior is None else [float(x) for x in log_prior]
        self.prior_domain = prior_domain
        self.routing = dict(routing) if routing else None
        first = self.models[0] if self.models else {}
        self.vocab_size = int(vocab_size or first.get("vocab_size") or 0)
        positions = [int(m.get("max_position_embeddings") or 0) for m in self.models]
        self.max_position_embeddings = int(max_position_embeddings or min([p for p in positions if p] or [2048]))
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
        if self.models:
            self.check()

    def check(self) -> None:
        """Refuse a configuration the model cannot compute, with one line saying what is wrong."""
        k = len(self.members)
        if k < 1 or any(not 0 <= i < len(self.models) for i in self.members):
            raise ValueError(f"hdee_ensemble: members {self.members} must index the {len(self.models)} models")
        vocabs = {int(self.models[i].get("vocab_size") or 0) for i in range(len(self.models))}
        if len(vocabs) != 1:
            raise ValueError(f"hdee_ensemble: the models disagree on the vocabulary size ({sorted(vocabs)})")
        r = routed_k(self.method)
        if self.method not in METHODS and not r:
            raise ValueError(f"hdee_ensemble: unknown method {self.method!r} (known: {', '.join(METHODS)}, routed-top<k>)")
        if self.method in NEEDS_PRIOR and (self.log_prior is None or len(self.log_prior) != k):
            raise ValueError(f"hdee_ensemble: {self.method} needs log_prior with one weight per member ({k})")
        if self.method == "top-k" and self.mix_top_k < 1:
            raise ValueError(f"hdee_ensemble: top-k needs mix_top_k >= 1, got {self.mix_top_k}")
        if r:
            rt = self.routing or {}
            if not isinstance(rt.get("route_tokens"), int) or rt["route_tokens"] < 1:
                raise ValueError("hdee_ensemble: a routed method needs routing.route_tokens >= 1")
            if not 0 <= int(rt.get("prefix_model", -1)) < len(self.models):
                raise ValueError("hdee_ensemble: routing.prefix_model must index one of the models")
            if k > 1 and r < k and rt.get("kind") not in ROUTER_KINDS:
                raise ValueError(f"hdee_ensemble: routing.kind must be one of {', '.join(ROUTER_KINDS)}")
