"""Strategies: how each turns the config into experts under one budget (see `hdee.strategies.base`).

Importing this package registers the built-in strategies; `hdee.registry.STRATEGIES` lists them.
"""

from hdee.strategies.base import (
    Assignment,
    ExpertSpec,
    PilotSpec,
    Strategy,
    StrategyContext,
    get_strategy,
    register,
)

# the built-ins, one module each; importing one registers it (in this order: the order of "known:" lists)
from hdee.strategies import hand  # noqa: E402,F401,I001
from hdee.strategies import dense  # noqa: E402,F401
from hdee.strategies import auto  # noqa: E402,F401
from hdee.strategies import controls  # noqa: E402,F401
from hdee.strategies import spreads  # noqa: E402,F401

__all__ = ["Assignment", "ExpertSpec", "PilotSpec", "Strategy", "StrategyContext", "get_strategy", "register"]
