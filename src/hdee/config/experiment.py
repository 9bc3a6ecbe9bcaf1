"""The experiment config: one typed, validated object loaded from a TOML or YAML file.

Loading does no I/O beyond reading the file, and importing the plugin modules it names (they
register strategies or mixing methods, and every process that reads the config imports them).
Strategy and mixing-method names are checked against `hdee.registry`.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hdee.config.eval_execute import EvalConfig, ExecuteConfig, RoutingConfig
from hdee.config.sections import (
    AutoConfig,
    BudgetConfig,
    DataConfig,
    DomainConfig,
    LineageConfig,
    ModelFamily,
    Schedule,
    SeedConfig,
    Strict,
    TrainConfig,
)
from hdee.core.errors import ConfigError, one_line
from hdee.core.names import Name
from hdee.registry import MIXING_METHODS, STRATEGIES, default_strategies, import_plugins

# ----------------------------------------------------------------------- the whole


class ExperimentConfig(Strict):
    plugins: list[str] = Field(
        default_factory=list, description="modules imported before anything else is checked; they register strategies or mixing methods"
    )
    name: Name
    seed: int = Field(default=0, ge=0, lt=2**63, description="a whole number in [0, 2**63): the seeds derived from it share that range")
    domains: list[DomainConfig] = Field(min_length=1)
    data: DataConfig = DataConfig()
    model: ModelFamily | None = Field(default=None, exclude_if=lambda v: v is None)  # not with seed_models.from
    train: TrainConfig = TrainConfig()
    seed_models: SeedConfig
    lineages: list[LineageConfig] = Field(min_length=1)
    budget: BudgetConfig
    strategies: list[Name] = Field(default_factory=default_strategies)
    ensemble: Literal["final", "all"] = "final"
    auto: AutoConfig = AutoConfig()
    eval: EvalConfig = Field(default_factory=EvalConfig)  # built at validation: its default methods come from the registry
    routing: RoutingConfig = RoutingConfig()
    execute: ExecuteConfig = ExecuteConfig()

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, modules: list[str]) -> list[str]:
        import_plugins(modules)
        return modules

    @model_serializer(mode="wrap")
    def _omit_no_plugins(self, handler):
        # added after the first release: left out of dumps when empty, so config snapshots of
        # existing runs still match
        data = handler(self)
        if isinstance(data, dict) and not self.plugins:
            data.pop("plugins", None)
        return data

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
        if len({len(lin.domains) for lin in self.lineages}) != 1:
            raise ValueError("every lineage must have the same number of iterations")
        check_lineages(self)
        if (self.model is None) == (self.seed_models.from_ is None):
            raise ValueError("give exactly one of [model] (seeds trained from scratch) or seed_models.from (existing checkpoints)")
        if self.seed_models.from_ is not None and self.data.tokenizer.kind != "pretrained":
            raise ValueError("seed_models.from needs the checkpoints' tokenizer: data.tokenizer = { kind = 'pretrained', path = ... }")
        sizes = set(self.size_names)
        spread_sizes = [s for m in self.budget.spreads.values() for s in m.values()]
        for rule_size in [self.budget.baseline.size, *self.budget.sizes.values(), *spread_sizes]:
            if rule_size not in sizes:
                where = "model.intermediate" if self.model is not None else "seed_models.from"
                raise ValueError(f"size {rule_size!r} is not in {where} ({', '.join(sorted(sizes))})")
        spreads = [(m, f"budget.spreads.{n}") for n, m in self.budget.spreads.items()]
        for tier_map, what in ((self.budget.sizes, "budget.sizes"), (self.budget.steps, "budget.steps"), *spreads):
            missing = sorted({lin.tier for lin in self.lineages} - set(tier_map))
            if tier_map and missing:
                raise ValueError(f"{what} has no entry for tier {missing[0]!r}")
        self._check_strategies()
        check_domain_lr(self)
        for dom in self.seed_models.domains or []:
            if dom not in names:
                raise ValueError(f"seed_models.domains names unknown domain {dom!r}")
        if self.route_tokens >= self.data.seq_len:
            raise ValueError(f"routing.route_tokens {self.route_tokens} must be below data.seq_len {self.data.seq_len}")
        if self.routing.prefix_model is not None and self.routing.prefix_model not in sizes:
            raise ValueError(f"routing.prefix_model {self.routing.prefix_model!r} is not in model.intermediate")
        front = self.routing.front
        if any(r >= self.data.seq_len for r in front.route_tokens):
            raise ValueError(f"routing.front.route_tokens must be below data.seq_len {self.data.seq_len}")
        if any(c > self.data.seq_len for c in [*front.context_tokens, self.routing.context_tokens or 0]):
            raise ValueError(f"routing context_tokens must be at most data.seq_len {self.data.seq_len}")
        if front.routers and front.reference not in self.eval.methods:
            raise ValueError(f"routing.front.reference {front.reference!r} is not in eval.methods")
        if front.routers and not MIXING_METHODS.get(front.reference).cached:
            raise ValueError(f"routing.front.reference {front.reference!r} must mix cached scores (both ensemble kinds have it)")
        unknown = [s for s in front.strategies or [] if s not in self.strategies]
        if unknown:
            raise ValueError(f"routing.front.strategies names {unknown[0]!r}, which is not in strategies")
        return self

    def _check_strategies(self) -> None:
        """Every strategy is registered, and the budget has the tier maps its traits say it reads."""
        for name in self.strategies:
            if name not in STRATEGIES:
                raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES.names())}")
        entries = [STRATEGIES.get(name) for name in self.strategies]
        for e in entries:
            spread = getattr(e.cls, "spread", None)
            if spread is not None and spread not in self.budget.spreads:
                raise ValueError(f"strategy {e.name!r} names spread {spread!r}, which budget.spreads does not define")
        sized = [e.name for e in entries if e.needs_sizes]
        if sized and not self.budget.sizes:
            raise ValueError(f"heterogeneous-size strategies need budget.sizes ({', '.join(sized)})")
        if self.budget.charge == "total" and "auto" in self.strategies:
            raise ValueError("budget.charge = 'total' is not supported by the auto strategy (it allocates the domain phase only)")
        stepped = [e.name for e in entries if e.needs_steps]
        if stepped and not self.budget.steps:
            raise ValueError(f"heterogeneous-step strategies need budget.steps ({', '.join(stepped)})")

    def schedule(self, seed: bool) -> Schedule:
        """The learning-rate schedule of a job: seed models train from scratch, branches fine-tune."""
        return self.seed_models.schedule if seed else self.budget.schedule

    def seed_train(self) -> TrainConfig:
        """The trainer settings of a seed model: `train`, with the seed's own eval cadence where set."""
        sm = self.seed_models
        update = {k: v for k, v in (("eval_every", sm.eval_every), ("eval_tokens", sm.eval_tokens)) if v is not None}
        return self.train.model_copy(update=update) if update else self.train

    # convenience views used across modules
    @property
    def size_names(self) -> list[str]:
        """The sizes experts can have, smallest first as the config lists them."""
        return list(self.model.intermediate) if self.model is not None else list(self.seed_models.from_ or {})

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
    def route_tokens(self) -> int:
        """Tokens a router reads at the start of each window (routing.route_tokens, else seq_len // 4)."""
        return self.routing.route_tokens or max(1, self.data.seq_len // 4)

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


def check_domain_lr(cfg: ExperimentConfig) -> None:
    """ValueError when `budget.max_lr_vs_seed` is set and the domain phase peaks above that multiple
    of the seed models' peak lr, or has no warm-up. Imported seeds have no schedule here to compare with."""
    ratio = cfg.budget.max_lr_vs_seed
    if ratio is None or cfg.seed_models.from_ is not None:
        return
    lr, seed_lr = cfg.budget.schedule.lr, cfg.seed_models.schedule.lr
    if lr > ratio * seed_lr * (1 + 1e-9):
        raise ValueError(f"budget.schedule.lr {lr:g} is {lr / seed_lr:.3g}x the seed models' peak {seed_lr:g}, "
                         f"above budget.max_lr_vs_seed {ratio:g}")
    if cfg.budget.schedule.warmup <= 0:
        raise ValueError("budget.schedule.warmup is 0, but budget.max_lr_vs_seed asks for a warm-up")


def check_lineages(cfg: ExperimentConfig) -> None:
    """ValueError unless every lineage names known training domains, each in one lineage only,
    and every training domain is in a lineage."""
    roles = {d.name: d.role for d in cfg.domains}
    seen: dict[str, str] = {}
    for lin in cfg.lineages:
        for dom in lin.domains:
            if dom not in roles:
                raise ValueError(f"lineage {lin.name!r} names unknown domain {dom!r}")
            if roles[dom] != "train":
                raise ValueError(f"lineage {lin.name!r} names held-out domain {dom!r}")
            if dom in seen:
                raise ValueError(f"domain {dom!r} is in lineages {seen[dom]!r} and {lin.name!r}")
            seen[dom] = lin.name
    untrained = [d for d, role in roles.items() if role == "train" and d not in seen]
    if untrained:
        raise ValueError(f"train domain {untrained[0]!r} is in no lineage")


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a TOML or YAML experiment file; raise ConfigError with one line saying what and where."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None
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
        raise ConfigError(f"{path}: {one_line(exc)}") from None
