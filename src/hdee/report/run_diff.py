"""`hdee compare RUN_A RUN_B`: two runs' saved results side by side, with the differences.

Only runs that measured the same thing are compared: the same domains (names and roles) and
the same test windows (each domain's test split has the same sha256 in both runs' manifests,
and the same number of windows was scored), so every difference is the models', not the data's.
Both ensemble kinds are compared under one mixing method per kind: the method the first run
chose, which the second must have evaluated too (or `method=` for the config's kind).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hdee.report.compare import kinds_of, mean_log_ppl, model_alone, strategy_order
from hdee.core.errors import HdeeError
from hdee.core.fsutil import read_json
from hdee.core.layout import RunLayout
from hdee.core.results_schema import check_readable


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """A run's results.json (repeat 0), checked for a schema version this hdee reads."""
    path = RunLayout(run_dir).results_json
    if not path.is_file():
        raise HdeeError(f"{path}: not found; `hdee run` or `hdee eval` writes it")
    try:
        results = read_json(path)
    except ValueError as exc:
        raise HdeeError(f"{path}: not valid JSON ({str(exc).splitlines()[0]}); `hdee eval` rewrites it") from None
    if not isinstance(results, dict) or "domains" not in results or "ensembles" not in results:
        raise HdeeError(f"{path}: not an hdee results file")
    return check_readable(results, path)


def _test_split_sha(run_dir: Path, domain: str) -> str:
    manifest = RunLayout(run_dir).domain_dir(domain) / "manifest.json"
    try:
        return str(read_json(manifest)["splits"]["test"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise HdeeError(f"{manifest}: missing or unreadable, so the test windows of {domain!r} cannot be checked") from None


def check_comparable(a_dir: Path, a: dict[str, Any], b_dir: Path, b: dict[str, Any]) -> list[str]:
    """The shared domains, in the first run's order; HdeeError naming the first difference otherwise."""
    da = {d["name"]: d for d in a["domains"]}
    db = {d["name"]: d for d in b["domains"]}
    if set(da) != set(db):
        only_a, only_b = sorted(set(da) - set(db)), sorted(set(db) - set(da))
        what = ", ".join([*(f"{d} only in {a_dir}" for d in only_a), *(f"{d} only in {b_dir}" for d in only_b)])
        raise HdeeError(f"cannot compare {a_dir} and {b_dir}: their domains differ ({what})")
    for name in da:
        for key in ("role", "windows", "tokens"):
            if da[name].get(key) != db[name].get(key):
                raise HdeeError(f"cannot compare {a_dir} and {b_dir}: domain {name!r} has {key} {da[name].get(key)!r} "
                                f"in one and {db[name].get(key)!r} in the other")
        if _test_split_sha(a_dir, name) != _test_split_sha(b_dir, name):
            raise HdeeError(f"cannot compare {a_dir} and {b_dir}: the test windows of {name!r} differ "
                            "(other text, tokenizer or split)")
    return list(da)


def _change(a: float, b: float) -> float:
    return b / a - 1.0


def diff_runs(a_dir: str | Path, b_dir: str | Path, method: str | None = None) -> dict[str, Any]:
    """Per ensemble kind both runs evaluated: per strategy both ran, each domain's perplexity in
    A and B and the relative change (B / A - 1), and the geometric-mean perplexity over domains."""
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    a, b = load_results(a_dir), load_results(b_dir)
    domains = check_comparable(a_dir, a, b_dir, b)
    ka, kb = kinds_of(a), kinds_of(b)
    out: dict[str, Any] = {"a": str(a_dir), "b": str(b_dir), "domains": domains, "kinds": {},
                           "only_a": [], "only_b": [], "config": [a.get("config"), b.get("config")]}
    for kind, ra in ka.items():
        rb = kb.get(kind)
        if rb is None:
            continue
        chosen = method if (method and kind == a.get("ensemble", "final")) else ra["method_choice"]["method"]
        shared = [s for s in ra["ensembles"] if s in rb["ensembles"]]
        missing = [s for s in shared if chosen not in ra["ensembles"][s]["ppl"] or chosen not in rb["ensembles"][s]["ppl"]]
        if missing:
            raise HdeeError(f"method {chosen!r} was not evaluated for {missing[0]} in both runs "
                            "(pass --method with one both evaluated, or `hdee eval --methods` the other run)")
        rows = {}
        for s in strategy_order(shared):
            pa = ra["ensembles"][s]["ppl"][model_alone(s, ra["ensembles"][s], chosen)]
            pb = rb["ensembles"][s]["ppl"][model_alone(s, rb["ensembles"][s], chosen)]
            per = {d: {"a": pa[d], "b": pb[d], "change": _change(pa[d], pb[d])} for d in domains}
            ga, gb = math.exp(mean_log_ppl(pa, domains)), math.exp(mean_log_ppl(pb, domains))
            rows[s] = {"domains": per, "mean": {"a": ga, "b": gb, "change": _change(ga, gb)},
                       "lower_in_b": sum(1 for v in per.values() if v["b"] < v["a"])}
        out["kinds"][kind] = {"method": chosen, "method_b_chose": rb["method_choice"]["method"], "strategies": rows}
        out["only_a"] = sorted(set(ra["ensembles"]) - set(rb["ensembles"]))
        out["only_b"] = sorted(set(rb["ensembles"]) - set(ra["ensembles"]))
    if not out["kinds"]:
        raise HdeeError(f"cannot compare {a_dir} and {b_dir}: they share no ensemble kind")
    return out
