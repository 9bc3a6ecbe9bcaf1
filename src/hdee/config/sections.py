"""The sections of an experiment config: data, model, training, budget, auto (eval, routing and
execute are in `eval_execute`).

Every section forbids unknown keys, so a typo fails at load time with its path, instead of
silently training with a default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SerializeAsAny, ValidationError, field_validator, model_serializer, model_validator

from hdee.core.errors import one_line
from hdee.core.names import Name
from hdee.registry import SOURCES


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data


class SourceSpec(Strict):
    """Where a domain's documents come from: `kind` names a registered source
    (`hdee.registry.SOURCES`: embedded, hf, files, or a plugin's), the other keys are its settings."""

    kind: str


class DomainConfig(Strict):
    name: Name
    source: SerializeAsAny[SourceSpec]
    role: Literal["train", "heldout", "seed"] = Field(
        description="train: in a lineage and evaluated; heldout: evaluated only; seed: seed training data only"
    )
    tier: str | None = None
    max_bytes: int | None = Field(default=None, gt=0)
    max_train_tokens: int | None = Field(
        default=None, gt=0, exclude_if=lambda v: v is None,  # configs without it dump (and hash) as before
        description="this domain's train-split cap, instead of data.max_train_tokens (e.g. a large seed corpus)",
    )
    max_eval_tokens: int | None = Field(
        default=None, gt=0, exclude_if=lambda v: v is None,
        description="this domain's val/test-split cap, instead of data.max_eval_tokens (e.g. a seed corpus "
        "whose validation loss decides whether the seed sizes differ)",
    )

    @field_validator("source", mode="before")
    @classmethod
    def _source_of_its_kind(cls, value: Any) -> Any:
        """The settings checked by the model their `kind` registered (so unknown keys still fail)."""
        if isinstance(value, SourceSpec):
            return value
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise ValueError("a source needs a kind (e.g. embedded, hf, files)")
        entry = SOURCES.find(value["kind"])
        if entry is None:
            raise ValueError(f"unknown source kind {value['kind']!r}; known: {', '.join(SOURCES.names())}")
        try:
            return entry.spec.model_validate(value)
        except ValidationError as exc:
            raise ValueError(one_line(exc)) from None


class TokenizerConfig(Strict):
    """Either train a byte-level BPE on the training domains, or load an existing one."""

    kind: Literal["bpe", "pretrained"] = "bpe"
    vocab_size: int = Field(default=4096, ge=260)
    path: str | None = None
    train_bytes: int = Field(default=20_000_000, gt=0)

    @model_validator(mode="after")
    def _path_for_pretrained(self) -> "TokenizerConfig":
        if self.kind == "pretrained" and not self.path:
            raise ValueError("tokenizer.kind = 'pretrained' needs tokenizer.path")
        return self


class SplitConfig(Strict):
    train: float = Field(default=0.8, ge=0)
    val: float = Field(default=0.1, gt=0)
    test: float = Field(default=0.1, gt=0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        if abs(self.train + self.val + self.test - 1.0) > 1e-9:
            raise ValueError("split fractions must sum to 1")
        return self


class DedupConfig(Strict):
    """Val/test documents of every domain that duplicate training text are dropped (hdee.data.dedup)."""

    exact: bool = Field(default=True, description="same text up to case, spacing and punctuation")
    near: float = Field(default=0.8, ge=0, le=1, description="MinHash Jaccard of word n-gram sets; 0: off")
    contained: float = Field(default=0.5, ge=0, le=1, description="share of word n-grams found in training text; 0: off")
    ngram: int = Field(default=8, gt=0, description="words per n-gram")
    num_perm: int = Field(default=128, ge=16, description="MinHash permutations")


class DataConfig(Strict):
    seq_len: int = Field(default=128, gt=0)
    tokenizer: TokenizerConfig = TokenizerConfig()
    split: SplitConfig = SplitConfig()
    max_train_tokens: int | None = Field(default=None, gt=0)
    max_eval_tokens: int | None = Field(default=None, gt=0)
    workers: int | None = Field(default=None, gt=0)
    token_dtype: Literal["auto", "uint16", "uint32"] = Field(
        default="auto", description="shard dtype; auto: uint16 when the vocabulary fits, else uint32"
    )
    dedup: DedupConfig = DedupConfig()


# -------------------------------------------------------------------------- model


def check_heads(hidden: int, heads: int, kv_heads: int | None) -> None:
    """ValueError unless the attention heads split the hidden size (and the kv heads the heads)."""
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
    if kv_heads and heads % kv_heads:
        raise ValueError(f"heads {heads} is not divisible by kv_heads {kv_heads}")


class ModelFamily(Strict):
    """A size family: same hidden size and depth, MLP width differs by size (paper: 3:4:5)."""

    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    intermediate: dict[Name, PositiveInt]
    rope_theta: float = 10000.0
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _shape(self) -> "ModelFamily":
        check_heads(self.hidden, self.heads, self.kv_heads)
        if not self.intermediate:
            raise ValueError("model.intermediate must name at least one size")
        return self


# ----------------------------------------------------------------------- training


class Schedule(Strict):
    lr: float = Field(gt=0)
    min_lr: float = Field(ge=0)
    warmup: float = Field(default=0.05, ge=0, description="steps if >= 1, else a fraction of steps")


#: trainer settings that only change how a job runs or reports, not the weights it writes
TRAIN_DISPLAY_ONLY = ("compile",)


class TrainConfig(Strict):
    """Settings shared by every training job."""

    batch_tokens: int = Field(default=8192, gt=0)
    micro_batch_tokens: int | None = Field(
        default=None, gt=0, description="tokens per forward/backward; left out: the most that memory_gib allows"
    )
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, gt=0)
    eval_every: int = Field(default=50, gt=0)
    eval_tokens: int = Field(default=16384, gt=0)
    checkpoint_every: int = Field(default=100, gt=0)
    compile: bool = False
    loss: Literal["plain", "chunked", "fused"] = Field(
        default="plain",
        description="plain: full fp32 logits; chunked: a slice of logits at a time; fused: a fused kernel on CUDA when installed, else chunked",
    )
    memory_gib: float = Field(default=8.0, gt=0, description="memory of one training process, for the micro batch when it is left out")

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler):
        # settings added after the first release stay out of dumps at their defaults, so that job
        # ids (which hash this section) and resumable trainer states of existing runs stay valid
        data = handler(self)
        if isinstance(data, dict):
            for name in ("loss", "memory_gib"):
                if getattr(self, name) == type(self).model_fields[name].default:
                    data.pop(name, None)
        return data


class SeedConfig(Strict):
    """Seed models, one per size a strategy needs: trained from scratch on `domains` (default: all train
    domains), or taken from existing HF causal-LM checkpoints of one family with `from`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    from_: dict[str, str] | None = Field(
        default=None, alias="from", exclude_if=lambda v: v is None,  # configs without it dump (and hash) as before
        description="size -> HF checkpoint (local dir or hub id); replaces [model]",
    )
    tokens: int | None = Field(default=None, gt=0)
    flops: float | None = Field(default=None, gt=0)
    domains: list[str] | None = None
    schedule: Schedule = Schedule(lr=3e-3, min_lr=3e-4, warmup=0.05)
    eval_every: int | None = Field(
        default=None, gt=0, exclude_if=lambda v: v is None,
        description="steps between a seed's validation evals, instead of train.eval_every",
    )
    eval_tokens: int | None = Field(
        default=None, gt=0, exclude_if=lambda v: v is None,
        description="validation tokens of a seed's evals (its final_val_loss included), instead of train.eval_tokens",
    )
    cache: bool = Field(
        default=False, exclude_if=lambda v: not v,  # configs without it dump (and hash) as before
        description="train each seed once into $HDEE_CACHE/seeds/<content hash>/ (hdee seeds CONFIG) and import it "
        "into the run; every --vary seed-models draw is one more cache entry",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> "SeedConfig":
        if self.from_ is not None:
            if not self.from_:
                raise ValueError("seed_models.from must name at least one size")
            if self.tokens is not None or self.flops is not None:
                raise ValueError("seed_models.from takes trained checkpoints: drop tokens and flops")
            if self.cache:
                raise ValueError("seed_models.cache trains seeds once for every run; seed_models.from imports existing ones: give one")
        elif (self.tokens is None) == (self.flops is None):
            raise ValueError("seed needs exactly one of tokens or flops")
        return self


class LineageConfig(Strict):
    name: Name
    tier: str
    domains: list[str] = Field(min_length=1)


class Rule(Strict):
    size: str
    steps: int = Field(gt=0)


class BudgetConfig(Strict):
    """The domain phase: the baseline rule fixes the budget; tiers decide the heterogeneous strategies."""

    baseline: Rule
    sizes: dict[str, str] = Field(default_factory=dict, description="tier -> size (MHe)")
    spreads: dict[Name, dict[str, str]] = Field(
        default_factory=dict, exclude_if=lambda v: not v,  # configs without it dump (and hash) as before
        description="more size spreads, name -> (tier -> size); strategy `MHe-IHo.NAME` (also MHe-IHe, placebo) uses one",
    )
    steps: dict[str, int] = Field(default_factory=dict, description="tier -> steps (IHe)")
    vary_steps_in: Literal["last", "all"] = "last"
    tolerance: float = Field(default=0.01, gt=0)
    flops: Literal["paper", "hardware"] = Field(
        default="hardware",
        description="the FLOP count budgets are matched in: paper = 6 x non-embedding params per token; "
        "hardware = every matmul, LM head and causal attention included (hdee.budget)",
    )
    schedule: Schedule = Schedule(lr=1e-3, min_lr=1e-4, warmup=0.05)
    tiers: Literal["hand", "measured"] = Field(
        default="hand", exclude_if=lambda v: v == "hand",
        description="hand: the lineages' tiers as the config sets them; measured: dealt by the returns pilots measure "
        "(hdee.strategies.measured), the pilots paid from each strategy's domain phase",
    )
    charge: Literal["domain", "total"] = Field(
        default="domain", exclude_if=lambda v: v == "domain",  # configs without it dump (and hash) as before
        description="what budgets match: the domain phase only, or seed models + domain phase (a strategy pays "
        "for every seed size it needs; hdee.budget.domain_target)",
    )
    max_lr_vs_seed: float | None = Field(
        default=None, gt=0, exclude_if=lambda v: v is None,  # configs without it dump (and hash) as before
        description="refuse a domain-phase peak lr above this multiple of the seed's peak, or no warm-up "
        "(the paper: 6e-5 after 6e-4, 0.1x, with a warm-up)",
    )


class AutoConfig(Strict):
    """The `auto` strategy: pilots measure each domain's difficulty, a solver allocates (docs/auto.md)."""

    objective: Literal["mean", "minimax"] = Field(default="mean", description="predicted mean loss, or the worst domain's")
    pilot_fraction: float = Field(default=0.1, gt=0, lt=0.5, description="share of the domain-phase budget spent on pilots")
    pilot_points: int = Field(default=3, ge=3, description="fewest loss points (= steps) one pilot must give")
    pilot_sizes: Literal["baseline", "all"] = Field(
        default="baseline", description="pilot every domain at the baseline size only (other sizes via the seed gap), or at every size"
    )
    step_choices: list[float] = Field(default=[0.5, 0.75, 1.0, 1.25, 1.5], min_length=1)

    @model_validator(mode="after")
    def _positive_choices(self) -> "AutoConfig":
        if any(not f > 0 for f in self.step_choices):
            raise ValueError("auto.step_choices must all be > 0")
        return self
