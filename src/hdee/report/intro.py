"""The opening of `report.md`: what is compared and what its words mean, for a reader who has
not read the README. Definitions come from the strategy registry (traits and class docstrings)."""

from __future__ import annotations

from typing import Any

from hdee.report.compare import strategy_order
from hdee.registry import STRATEGIES

KIND_NAMES = {"final": "final-expert ensemble (the paper's: each lineage's last expert)",
              "all": "forest (BTM's: every expert the strategy trained)"}
KIND_SHORT = {"final": "final experts", "all": "forest"}
PAPER = ("HDEE: Heterogeneous Domain Expert Ensemble (Ersoy, Kolehmainen and Passamani Andrade, 2025), "
         "which builds on Branch-Train-Merge (Li et al., 2022)")


def _strategy_line(name: str) -> str:
    entry = STRATEGIES.find(name)
    if entry is None:
        return f"- `{name}`: a plugin strategy."
    summary = (entry.cls.__doc__ or "").strip().split("\n\n")[0]  # the docstring's first paragraph
    what = " ".join(summary.split()).rstrip(".") or "a registered strategy"
    roles = [role for flag, role in ((entry.baseline, "the baseline every other strategy is compared against"),
                                     (entry.heterogeneous, "heterogeneous in the paper's count"),
                                     (entry.single_model, "a single model, not an ensemble")) if flag]
    return f"- `{name}`: {what}" + (f" ({'; '.join(roles)})" if roles else "") + "."


def _seeds_sentence(seed_corpus: dict[str, Any] | None) -> str:
    """What the seed models trained on, from results.json's `seed_corpus`."""
    names = ", ".join(f"`{d}`" for d in (seed_corpus or {}).get("domains", []))
    if seed_corpus and seed_corpus.get("disjoint") and names:
        return f"A seed model per size is trained on a seed corpus that no expert domain shares ({names}), then each domain "
    if names:
        return f"A seed model per size is trained on {names}, the experts' own domains among them, then each domain "
    return "A seed model is trained on all training domains, then each domain "


def intro(strategies: list[str], seed_corpus: dict[str, Any] | None = None) -> list[str]:
    """The 'What this compares' section for the strategies of the report (`seed_corpus`: results.json's)."""
    single = [s for s in strategy_order(strategies) if (e := STRATEGIES.find(s)) is not None and e.single_model]
    return [
        "## What this compares", "",
        f"This run reproduces and extends {PAPER}. " + _seeds_sentence(seed_corpus) +
        "(or lineage of domains) continues from it as its own expert; an ensemble mixes its experts' next-token "
        "distributions. Every strategy gets the same domain-phase compute budget and spends it differently:", "",
        "- **MHo / MHe**: model-homogeneous (every expert the baseline size) / model-heterogeneous (size by the "
        "domain's difficulty tier: harder domains get larger experts).",
        "- **IHo / IHe**: iteration-homogeneous (every expert trains the baseline's steps) / iteration-heterogeneous "
        "(steps by tier).",
        *(_strategy_line(s) for s in strategy_order(strategies)), "",
        "Perplexity is exp of the mean next-token loss (nats/token) on a domain's test split, never seen in training: "
        "lower is better. *Trained* domains have their own expert; *held-out* domains have none and test how the "
        "ensemble generalises. *Final experts* = each lineage's last expert (the paper's ensemble); *forest* = every "
        "expert a strategy trained (BTM's). The *paper's count* asks in how many domains some heterogeneous ensemble "
        "is the lowest of the ensembles" + (f"; the single model{'s' if len(single) > 1 else ''} "
                                            f"({', '.join(f'`{s}`' for s in single)}) compared separately." if single else "."), "",
    ]
