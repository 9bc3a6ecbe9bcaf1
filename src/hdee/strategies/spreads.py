"""Size-heterogeneous strategies at another size spread: `MHe-IHo.far` is MHe-IHo with the tier -> size
map `budget.spreads.far` instead of `budget.sizes` (likewise `MHe-IHe.NAME` and `placebo.NAME`).

Running a close and a far spread side by side in one config tests the paper's claim that more
heterogeneity helps (the report's trend test, `hdee.report.spread`). The names are a registry family:
each is registered the first time a config names it, with the traits of the strategy it varies.
"""

from __future__ import annotations

import re

from hdee.registry import STRATEGIES, StrategyEntry

VARIED = ("MHe-IHo", "MHe-IHe", "placebo")
PATTERN = "(" + "|".join(map(re.escape, VARIED)) + r")\.([A-Za-z0-9][A-Za-z0-9_-]*)"


def _entry(m: re.Match[str]) -> StrategyEntry:
    base = STRATEGIES.get(m.group(1))
    doc = f"{m.group(1)} at the size spread `budget.spreads.{m.group(2)}` in place of `budget.sizes`."
    cls = type(f"{base.cls.__name__}_{m.group(2)}", (base.cls,), {"spread": m.group(2), "name": m.group(0),
                                                                   "__module__": __name__, "__doc__": doc})
    return StrategyEntry(name=m.group(0), cls=cls, needs_sizes=True, needs_steps=base.needs_steps,
                         heterogeneous=base.heterogeneous, control=base.control, order=base.order, describe=base.describe)


STRATEGIES.add_family(PATTERN, _entry)


def family(name: str) -> tuple[str, str | None]:
    """(the strategy a name varies, its spread or None): `MHe-IHo.far` -> ("MHe-IHo", "far")."""
    m = re.fullmatch(PATTERN, name)
    return (m.group(1), m.group(2)) if m else (name, None)
