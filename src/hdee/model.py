"""Expert model sizes -> Llama configs and models, with exact parameter and FLOP accounting.

Two FLOP conventions are used, and every record says which:

* ``flops_per_token`` (budget convention, as in the HDEE paper): 6 x non-embedding parameters.
  The LM head is excluded too, which is harmless for budget comparisons because every size of a
  family shares the same head, and it reproduces the paper's 5.61e17 domain-phase budget.
* ``flops_per_token_full`` (hardware convention, for MFU): every matmul of one training step.
  Dense matmuls cost 2 FLOPs per weight per token forward and 4 backward, so 6 x (non-embedding +
  head) parameters; the embedding lookup is a gather and costs no matmul FLOPs. Attention adds,
  per token and layer, QK^T (2*T*d) and AV (2*T*d) forward with T = seq_len and d = hidden, i.e.
  4*T*d, and twice that backward: 12*T*d in all. A causal mask makes half of those products
  useless, so the *useful* count is 6*layers*T*d, which is what MFU counts by default
  (``causal=True``). The CPU sdpa kernel computes the whole T x T score matrix, so the hardware
  actually performs the ``causal=False`` figure; ``torch.utils.flop_counter`` counts that one.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hdee.config import ModelFamily
from hdee.config.sections import check_heads
from hdee.core.errors import ConfigError

if TYPE_CHECKING:  # torch and transformers load when a model is built, not when a plan is counted
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hdee.config import ExperimentConfig


class SizeSpec(BaseModel):
    """Everything that fixes an expert's architecture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    vocab: int = Field(gt=0)
    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    # an imported checkpoint: its model type and exact parameter counts (family sizes leave both out)
    arch: str = Field(default="llama", exclude_if=lambda v: v == "llama")
    counts: dict[str, int] | None = Field(default=None, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _shape(self) -> "SizeSpec":
        check_heads(self.hidden, self.heads, self.kv_heads)
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_family(cls, family: ModelFamily, size: str, vocab: int, seq_len: int) -> "SizeSpec":
        if size not in family.intermediate:
            known = ", ".join(sorted(family.intermediate))
            raise ConfigError(f"size {size!r} is not in model.intermediate ({known})")
        return cls(
            name=size,
            vocab=vocab,
            hidden=family.hidden,
            layers=family.layers,
            heads=family.heads,
            kv_heads=family.kv_heads or family.heads,
            intermediate=family.intermediate[size],
            seq_len=seq_len,
            rope_theta=family.rope_theta,
            tie_embeddings=family.tie_embeddings,
        )


@functools.lru_cache(maxsize=32)
def pretrained_spec(source: str, size: str, seq_len: int) -> SizeSpec:
    """The shape of an existing HF causal-LM checkpoint (local dir or hub id), with its exact parameter counts.

    The model is built on the meta device (no weights read); non-embedding = every parameter but
    the input embedding table and an untied output head, as for the family sizes.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"seed_models.from.{size} = {source!r}: cannot read its config ({first})") from None
    positions = getattr(config, "max_position_embeddings", None)
    if positions and seq_len > positions:
        raise ConfigError(f"seed_models.from.{size} = {source!r}: data.seq_len {seq_len} exceeds its {positions} positions")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    head_n = 0 if head is None or head.weight is emb else head.weight.numel()
    heads = int(config.num_attention_heads)
    return SizeSpec(
        name=size,
        vocab=int(config.vocab_size),
        hidden=int(config.hidden_size),
        layers=int(config.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        intermediate=int(getattr(config, "intermediate_size", None) or 4 * config.hidden_size),
        seq_len=seq_len,
        tie_embeddings=head_n == 0,
        arch=str(config.model_type),
        counts={"total": total, "embedding": emb.numel(), "head": head_n, "non_embedding": total - emb.numel() - head_n},
    )


def size_spec(cfg: "ExperimentConfig", size: str, vocab: int) -> SizeSpec:
    """The architecture of `size` in `cfg`: a size of its family, or the shape of its seed checkpoint."""
    if cfg.seed_models.from_ is not None:
        if size not in cfg.seed_models.from_:
            raise ConfigError(f"size {size!r} is not in seed_models.from ({', '.join(cfg.seed_models.from_)})")
        return pretrained_spec(cfg.seed_models.from_[size], size, cfg.data.seq_len)
    return SizeSpec.from_family(cfg.model, size, vocab, cfg.data.seq_len)


def attn_implementation() -> str:
    import torch

    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return "sdpa"
        return "flash_attention_2"
    return "sdpa"


def llama_config(spec: SizeSpec) -> LlamaConfig:
    """HF config for `spec`; sdpa attention (flash-attention 2 only when installed and on CUDA)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=spec.vocab,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        intermediate_size=spec.intermediate,
        max_position_embeddings=spec.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tie_embeddings,
        use_cache=True,  # saved for generation; training and scoring pass use_cache=False
        bos_token_id=None,  # the run's tokenizer fixes them when the model is saved (`set_special_tokens`)
        eos_token_id=None,
        attn_implementation=attn_implementation(),
    )


def set_special_tokens(model: torch.nn.Module, ids: dict[str, int | None]) -> None:
    """Write the tokenizer's bos/eos/pad ids where generation reads them, so `generate` and
    `pipeline` stop at end-of-text and pad batches with it (pad = eos: no new token, no new
    embedding row). The pad id goes into the generation config only: in the model config it
    becomes the input embedding's `padding_idx`, which freezes that row in any later training
    (a branch from this model would learn differently). Only unset ids are filled: an imported
    checkpoint keeps its own."""
    config = model.config
    config.use_cache = True
    for target, keys in ((config, ("bos", "eos")), (getattr(model, "generation_config", None), ("bos", "eos", "pad"))):
        for key in keys:
            value = ids.get(key)
            if target is not None and value is not None and getattr(target, f"{key}_token_id", None) is None:
                setattr(target, f"{key}_token_id", int(value))


def build_model(spec: SizeSpec, seed: int) -> LlamaForCausalLM:
    """A freshly initialised fp32 model; the same seed gives the same weights on every rank."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config(spec))
    return model.float()


def param_counts(spec: SizeSpec) -> dict[str, int]:
    """Exact counts: total, embedding (input table), head (0 if tied), non_embedding (the rest)."""
    if spec.counts is not None:
        return dict(spec.counts)
    d, kv = spec.hidden, spec.kv_heads * spec.head_dim
    attention = d * d + 2 * d * kv + d * d  # q, k, v, o projections (no biases)
    mlp = 3 * d * spec.intermediate  # gate, up, down
    norms = 2 * d
    non_embedding = spec.layers * (attention + mlp + norms) + d  # + final norm
    embedding = spec.vocab * d
    head = 0 if spec.tie_embeddings else spec.vocab * d
    return {
        "total": embedding + head + non_embedding,
        "embedding": embedding,
        "head": head,
        "non_embedding": non_embedding,
    }


def flops_per_token(spec: SizeSpec) -> float:
    """Budget convention (HDEE paper): 6 x non-embedding parameters per trained token."""
    return 6.0 * param_counts(spec)["non_embedding"]


def attention_flops_per_token(spec: SizeSpec, causal: bool = True) -> float:
    """Score and value matmuls of one training token: 12*L*T*d, halved when only the causal part counts."""
    full = 12.0 * spec.layers * spec.seq_len * spec.hidden
    return full / 2 if causal else full


def flops_per_token_full(spec: SizeSpec, causal: bool = True) -> float:
    """Hardware convention for MFU: 6 x (non-embedding + head) parameters + attention."""
    # the output projection is a vocab x hidden matmul whether or not it shares the input table
    dense = 6.0 * (param_counts(spec)["non_embedding"] + spec.vocab * spec.hidden)
    return dense + attention_flops_per_token(spec, causal)


def forward_flops(spec: SizeSpec, tokens: int) -> float:
    """One inference forward pass over the first `tokens` tokens of a window (hardware convention).

    2 x (non-embedding + head) parameters per token, plus causal attention: a token with n tokens
    of context costs 4*L*n*d (QK^T and AV), 2*L*d*tokens^2 over the prefix (the same T^2/2
    approximation as training), so at tokens = seq_len this is `flops_per_token_full(spec) / 3`
    per token.
    """
    dense = 2.0 * (param_counts(spec)["non_embedding"] + spec.vocab * spec.hidden)
    return dense * tokens + 2.0 * spec.layers * spec.hidden * tokens * tokens
