"""What `hdee report` checks in saved results before it renders them: every perplexity a number,
and every strategy its plan names present. A hand-edited or damaged results file is refused in
one line instead of failing halfway through a table or silently dropping a strategy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

from hdee.core.errors import HdeeError
from hdee.core.fsutil import read_json
from hdee.core.layout import RunLayout
from hdee.core.results_schema import check_readable
from hdee.plan.seeds import Vary


def _ppl_cells(results: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, value) of every perplexity the report reads: ensembles (both kinds) and experts."""
    kinds = [("ensembles", results.get("ensembles"))]
    alt = results.get("alt")
    if isinstance(alt, dict):
        kinds.append(("alt.ensembles", alt.get("ensembles")))
    for where, ensembles in kinds:
        if not isinstance(ensembles, dict):
            yield where, ensembles
            continue
        for name, ens in ensembles.items():
            ppl = ens.get("ppl") if isinstance(ens, dict) else None
            if not isinstance(ppl, dict):
                yield f"{where}.{name}.ppl", ppl
                continue
            for method, per in ppl.items():
                if not isinstance(per, dict):
                    yield f"{where}.{name}.ppl.{method}", per
                    continue
                for domain, v in per.items():
                    yield f"{where}.{name}.ppl.{method}.{domain}", v
    experts = results.get("experts")
    for eid, e in (experts.items() if isinstance(experts, dict) else []):
        ppl = e.get("ppl") if isinstance(e, dict) else None
        for domain, v in (ppl.items() if isinstance(ppl, dict) else [("", ppl)]):
            yield f"experts.{eid}.ppl{'.' + domain if domain else ''}", v


def check_results(results: dict[str, Any], path: Path, strategies: list[str] | None) -> None:
    """HdeeError naming the first perplexity that is not a positive number, or the first strategy of
    `strategies` (those of the plan the file was evaluated from) the file lacks."""
    for where, v in _ppl_cells(results):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and not math.isnan(v)):
            raise HdeeError(f"{path}: {where} is {v!r}, not a perplexity (a positive number); `hdee eval` rewrites the file")
    present = results.get("ensembles") or {}
    missing = [s for s in strategies or [] if s not in present]
    if missing:
        raise HdeeError(f"{path}: no results for strategy {', '.join(missing)} of its plan; `hdee eval` rewrites the file")


def load_repeats(layout: RunLayout, vary: Vary = "domain-phase", pilot: bool = False) -> list[dict[str, Any]]:
    """results.json (or with `pilot` pilot.json) and the repeats of kind `vary` after it, in order."""
    path_of = layout.pilot_path if pilot else layout.results_path
    paths = [path_of(0)]
    while (p := path_of(len(paths), vary)).exists():
        paths.append(p)
    runs = []
    for p in paths:
        try:
            runs.append(read_json(p))
        except ValueError as exc:
            raise HdeeError(f"{p}: not valid JSON ({str(exc).splitlines()[0]}); `hdee eval` rewrites it") from None
        if not isinstance(runs[-1], dict):
            raise HdeeError(f"{p}: expected a JSON object; `hdee eval` rewrites it")
        check_readable(runs[-1], p)
    return runs
