"""A run's seeds, derived explicitly from (config seed, repeat, what the seed is for), never from a job id.

- Seed models use the config seed, for their initial weights and for the order of their training
  windows, at repeat 0 and in every repeat that keeps them. A repeat that varies them
  (`--vary seed-models`) derives both from the repeat instead.
- Domain-phase jobs (pilots, experts, dense) start from their parent's weights; their seed only
  orders their training windows. It comes from a stream of its own, keyed by the job's role
  (its kind and the domains it trains on), so no job replays the windows its parent saw in the
  order its parent saw them. Jobs of the same role share an order on purpose: the same expert in
  two strategies that differ only in its size or steps sees the same windows in the same order, so
  the strategies' comparison is paired.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal, cast

from hdee.core.errors import ConfigError

Vary = Literal["domain-phase", "seed-models"]
VARY: tuple[Vary, ...] = ("domain-phase", "seed-models")


def check_vary(vary: str, imported_seeds: bool = False) -> Vary:
    """`vary` as a `Vary`; `imported_seeds`: the repeats would need seed models the config imports
    (`seed_models.from`), which have no initial weights to vary."""
    if vary not in VARY:
        raise ConfigError(f"--vary must be one of {', '.join(VARY)}, got {vary!r}")
    if vary == "seed-models" and imported_seeds:
        raise ConfigError("--vary seed-models retrains the seed models, but this config imports them (seed_models.from); "
                          "vary the domain phase instead")
    return cast(Vary, vary)


def derive(*parts: object) -> int:
    """A 63-bit seed that is a fixed function of `parts` (JSON-able)."""
    blob = json.dumps(["hdee-seed", *parts], sort_keys=True, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def seed_model_seed(config_seed: int, repeat: int, vary: Vary) -> int:
    """Initial weights and window order of the seed models of `repeat`."""
    if repeat == 0 or vary == "domain-phase":
        return config_seed
    return derive(config_seed, repeat, "seed-models")


def domain_phase_seed(config_seed: int, repeat: int, kind: str, domains: list[str]) -> int:
    """Window order of a domain-phase job: its kind and training domains are its role."""
    return derive(config_seed, repeat, "domain-phase", kind, list(domains))


def noise_covered(vary: Vary) -> str:
    """What the spread over repeats measures, in words for the report."""
    if vary == "seed-models":
        return ("each repeat retrains the seed models with other initial weights and window orders, then the "
                "domain phase with other window orders: the spread covers seed-model and domain-phase noise "
                "(the data, its splits and the tokenizer are the same in every repeat)")
    return ("each repeat trains the domain phase with other window orders from the same seed models: the spread "
            "covers domain-phase noise only, not seed-model noise (the seed models, data, splits and tokenizer "
            "are shared)")
