"""The experiment config: `load_config(path) -> ExperimentConfig`, its sections and its checks."""

from hdee.config.experiment import ExperimentConfig, check_lineages, load_config
from hdee.config.eval_execute import EvalConfig, ExecuteConfig, RoutingConfig, SlurmConfig
from hdee.config.sections import (
    AutoConfig,
    BudgetConfig,
    DataConfig,
    DedupConfig,
    DomainConfig,
    LineageConfig,
    ModelFamily,
    Rule,
    Schedule,
    SourceSpec,
    SeedConfig,
    SplitConfig,
    TokenizerConfig,
    TrainConfig,
)

__all__ = [
    "AutoConfig",
    "BudgetConfig",
    "DataConfig",
    "DedupConfig",
    "DomainConfig",
    "EvalConfig",
    "ExecuteConfig",
    "SlurmConfig",
    "ExperimentConfig",
    "LineageConfig",
    "ModelFamily",
    "RoutingConfig",
    "Rule",
    "Schedule",
    "SourceSpec",
    "SeedConfig",
    "SplitConfig",
    "TokenizerConfig",
    "TrainConfig",
    "check_lineages",
    "load_config",
]
