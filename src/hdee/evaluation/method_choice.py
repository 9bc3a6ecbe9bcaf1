"""Which mixing method the main table shows: fixed in the config, or chosen on validation windows.

The choice never looks at the test split. It is made on the validation windows that follow the
ones the cached prior is estimated on (`eval.prior_sequences`, then `eval.select_sequences`), so
the methods with a cached prior are not judged on the data their prior saw. Oracles and methods
scored on a subset of the windows are never chosen.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from hdee.core.errors import EnsembleError
from hdee.registry import MIXING_METHODS


def candidates(methods: list[str]) -> list[str]:
    """The methods that may be the main one (cached and not an oracle; unknown names are skipped)."""
    return [m for m in methods if (e := MIXING_METHODS.find(m)) is not None and e.candidate_default]


def choose_method(
    val_ppl: Mapping[str, Mapping[str, Mapping[str, float]]],
    methods: list[str],
    fixed: str | None = None,
) -> dict[str, Any]:
    """`{"method", "chosen_on": "config" | "val", "val_mean_log_ppl": {method: value}}`.

    `val_ppl[ensemble][method][domain]` is the perplexity on the selection windows of the
    ensembles of more than one expert (single models score the same under every method).
    The chosen method has the lowest mean log-perplexity over every (ensemble, domain) that has
    selection windows; ties go to the earlier method in `methods`.
    """
    pool = candidates(methods)
    means: dict[str, float] = {}
    for m in pool:
        logs = [math.log(v) for per in val_ppl.values() for v in per.get(m, {}).values() if math.isfinite(v)]
        if logs:
            means[m] = sum(logs) / len(logs)
    if fixed is not None:
        return {"method": fixed, "chosen_on": "config", "val_mean_log_ppl": means}
    if not pool:
        raise EnsembleError(f"no mixing method in eval.methods ({', '.join(methods)}) can be the main one; add a cached one")
    if not means:
        if not val_ppl:  # every ensemble is a single model: every method gives the same numbers
            return {"method": pool[0], "chosen_on": "val", "val_mean_log_ppl": {}}
        raise EnsembleError(
            "no validation windows after the prior's to choose the mixing method on; "
            "lower eval.prior_sequences, or fix the method with eval.method"
        )
    best = min(means, key=lambda m: (means[m], pool.index(m)))
    return {"method": best, "chosen_on": "val", "val_mean_log_ppl": means}
