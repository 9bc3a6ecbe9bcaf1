"""Tiers ordered by the compute a config gives them, mirrored (the placebo) or dealt again by a
measured return (`budget.tiers = "measured"`, and the report's comparison)."""

from __future__ import annotations

from hdee.config import ExperimentConfig


def tier_ranks(cfg: ExperimentConfig, tier_sizes: dict[str, str] | None = None) -> list[str]:
    """The lineages' tiers from least to most compute: by size (the family's order; `tier_sizes`,
    default `budget.sizes`), then steps."""
    sizes, tier_sizes = cfg.size_names, cfg.budget.sizes if tier_sizes is None else tier_sizes
    tiers = list(dict.fromkeys(lin.tier for lin in cfg.lineages))

    def key(t: str) -> tuple[int, int]:
        size = tier_sizes.get(t)
        return (sizes.index(size) if size in sizes else -1, cfg.budget.steps.get(t, 0))

    return sorted(tiers, key=key)


def reversed_tiers(cfg: ExperimentConfig, tier_sizes: dict[str, str] | None = None) -> dict[str, str]:
    """tier -> the tier at the mirrored rank (least compute <-> most compute)."""
    ranks = tier_ranks(cfg, tier_sizes)
    return {t: ranks[len(ranks) - 1 - i] for i, t in enumerate(ranks)}


def deal_tiers(cfg: ExperimentConfig, returns: dict[str, float], tier_sizes: dict[str, str] | None = None) -> dict[str, str]:
    """lineage -> tier: the config's tiers, least compute first, to the lineages in order of return."""
    rank = {t: i for i, t in enumerate(tier_ranks(cfg, tier_sizes))}
    hand = sorted((lin.tier for lin in cfg.lineages), key=rank.get)
    by_return = sorted(cfg.lineages, key=lambda lin: returns[lin.name])
    return {lin.name: tier for lin, tier in zip(by_return, hand)}
