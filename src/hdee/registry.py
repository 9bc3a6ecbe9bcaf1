"""The extension points, strategies, mixing methods, data sources and routers: one registry each, the
only list of names.

An entry carries its traits, and every module that needs a name or a trait (config validation,
the plan, evaluation, generation, the comparison, the report) reads them here. Built-in entries
are registered by their own modules, imported the first time a registry is read; a plugin module
(named in the config's `plugins`, so worker processes import it too) registers more with one call:

    hdee.strategies.register("my-strategy", MyStrategy, heterogeneous=True)
    hdee.ensemble.methods.register_method("my-mix", score=my_mix)
    hdee.data.sources.register_source("my-source", MySourceSpec, MyDocs)
    hdee.ensemble.routers.register_router("my-router", MyRouter)

The built-in modules import nothing heavy at module level, so reading a config (which checks its
names here) imports neither torch nor the data libraries.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from hdee.core.errors import ConfigError, EnsembleError, HdeeError, PlanError


@dataclass(frozen=True)
class StrategyEntry:
    """A strategy class and what the rest of hdee needs to know about it without running it."""

    name: str
    cls: type
    needs_sizes: bool = False  # reads budget.sizes (tier -> size)
    needs_steps: bool = False  # reads budget.steps (tier -> steps)
    heterogeneous: bool = False  # counted as heterogeneous in the paper's win count
    baseline: bool = False  # the homogeneous ensemble the others are compared against
    single_model: bool = False  # one model, not an ensemble: reported apart from the ensembles
    control: bool = False  # a control arm (placebo, no lineage): in every table, never in the paper's count
    order: int = 100  # display order in tables (lower first; ties keep registration order)
    default: bool = False  # run when a config names no strategies (hdee's own strategies only)
    describe: Callable[[dict[str, Any]], list[str]] | None = None  # lines for its recorded decision


@dataclass(frozen=True)
class MixingEntry:
    """A mixing method: how it scores cached log-probs and how it samples, with its traits."""

    name: str
    # (lp [K, n, T], log_prior [K] or None, top_k) -> mixture log-probs [n, T], from cached scores
    score: Callable[..., Any] | None = None
    # (models, windows [n, T + 1], batch_size) -> [n, T]: for methods that need the experts' full
    # distributions, so evaluation runs the models (product of experts)
    score_models: Callable[..., Any] | None = None
    # (dists [K, V], log_prior [K], seen [K], last [K] or None, top_k) -> (log-weights [K], mixture [V]);
    # None: the method cannot generate
    generate: Callable[..., Any] | None = None
    needs_prior: bool = False  # uses the cached domain prior estimated on validation windows
    oracle: bool = False  # looks at the scored data itself (a reference, never the default)
    # k > 0: a routed method (hdee.ensemble.routing): a router picks k experts per window from its
    # first tokens and only those run; it trades perplexity for compute, so it is never the default
    routed: int = 0
    # what a routed method routes on: "prefix" (the window's first R tokens) or "previous" (the
    # text before the window; hdee.ensemble.previous_context)
    context: str = "prefix"
    # how a routed method weighs its k experts: "posterior" (their likelihood of the window so far)
    # or "router" (softmax of the router's scores over them, fixed per window: c-BTM)
    weights: str = "posterior"
    runs_one: bool = False  # runs only the one expert it picks: its inference cost is that expert's
    default: bool = False  # the method generation and lm-eval use when none is named

    @property
    def cached(self) -> bool:
        """Computable from the cached true-token log-probs alone."""
        return self.score is not None

    @property
    def can_generate(self) -> bool:
        return self.generate is not None

    @property
    def candidate_default(self) -> bool:
        """Whether the report may pick it as the best method (oracles and bounded subsets may not)."""
        return self.cached and not self.oracle


@dataclass(frozen=True)
class SourceEntry:
    """A kind of data source: the settings a config's `source = {kind = ...}` takes, and its reader."""

    name: str  # the `kind`
    spec: type  # a pydantic model (a subclass of `hdee.config.SourceSpec`) of the source's settings
    open: Callable[[Any, str], Any]  # (spec, where) -> a DocumentSource (`documents()`, `fingerprint()`)
    max_bytes: int | None = None  # text read per domain when the domain sets no `max_bytes`
    # `hdee eval --data PREFIX:REST` builds this kind's spec as `parse(REST, text_field)`
    prefix: str | None = None
    parse: Callable[[str, str], Any] | None = None


@dataclass(frozen=True)
class RouterEntry:
    """A kind of router for routed mixing methods: how it is fitted, saved and loaded."""

    name: str
    cls: type  # `fit(...)`, `save(dir)`, `load(dir)`, `route(...)`; see hdee.ensemble.routers


E = TypeVar("E", StrategyEntry, MixingEntry, SourceEntry, RouterEntry)


class Registry(Generic[E]):
    """Entries by name, in registration order; `builtins` is imported before the first read."""

    def __init__(self, what: str, builtins: str, error: type[HdeeError]):
        self.what = what
        self._builtins = builtins
        self._error = error
        self._entries: dict[str, E] = {}
        self._builtin: list[str] = []
        self._families: list[tuple[re.Pattern[str], Callable[[re.Match[str]], E]]] = []
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: the built-in modules register through `add`, which calls this
            try:
                importlib.import_module(self._builtins)
            except BaseException:
                self._loaded = False
                raise

    def add(self, entry: E, builtin: bool = False) -> E:
        """Register `entry`; `builtin` marks hdee's own entries (see `builtin_names`)."""
        self._load()  # built-ins first, so they keep their place in the order
        old = self._entries.get(entry.name)
        if old is not None and _origin(old) != _origin(entry):
            raise ValueError(f"{self.what} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        if builtin and entry.name not in self._builtin:
            self._builtin.append(entry.name)
        return entry

    def add_family(self, pattern: str, make: Callable[[re.Match[str]], E]) -> None:
        """Names that fully match the regex `pattern` are registered on first use as `make(match)`
        (one family of parametrised names, e.g. routed-top<k>)."""
        self._families.append((re.compile(pattern), make))

    def _lookup(self, name: str) -> E | None:
        self._load()
        if name not in self._entries:
            for rx, make in self._families:
                if (m := rx.fullmatch(name)) is not None:
                    return self.add(make(m))
        return self._entries.get(name)

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)
        if name in self._builtin:
            self._builtin.remove(name)

    def get(self, name: str) -> E:
        entry = self._lookup(name)
        if entry is None:
            raise self._error(f"unknown {self.what} {name!r}; known: {', '.join(self._entries)}")
        return entry

    def find(self, name: str) -> E | None:
        return self._lookup(name)

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def builtin_names(self) -> list[str]:
        """The names hdee itself registers, in order (a default must not depend on which plugins a
        process happens to have imported)."""
        self._load()
        return list(self._builtin)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._lookup(name) is not None

    def __iter__(self) -> Iterator[E]:
        self._load()
        return iter(list(self._entries.values()))


def _origin(entry: StrategyEntry | MixingEntry | SourceEntry | RouterEntry) -> tuple:
    """Where an entry's code is defined: a module imported twice registers the same origin again."""
    if isinstance(entry, MixingEntry):
        code: Any = entry.score or entry.score_models
    else:
        code = entry.spec if isinstance(entry, SourceEntry) else entry.cls
    return (getattr(code, "__module__", None), getattr(code, "__qualname__", None))


STRATEGIES: Registry[StrategyEntry] = Registry("strategy", "hdee.strategies", PlanError)
MIXING_METHODS: Registry[MixingEntry] = Registry("mixing method", "hdee.ensemble.methods", EnsembleError)
SOURCES: Registry[SourceEntry] = Registry("data source kind", "hdee.data.sources", ConfigError)
ROUTERS: Registry[RouterEntry] = Registry("router kind", "hdee.ensemble.router_kinds", EnsembleError)


def default_strategies() -> list[str]:
    """The strategies a config runs when it names none, in registration order."""
    return [e.name for e in STRATEGIES if e.default]


def default_method() -> str:
    """The mixing method used where none is named (generation, lm-eval): the built-in marked default."""
    return next(e.name for e in MIXING_METHODS if e.default)


def import_plugins(modules: list[str]) -> None:
    """Import the plugin modules a config names; they register strategies or mixing methods."""
    for name in modules:
        if not isinstance(name, str) or not name or name.startswith(".") or not all(p.isidentifier() for p in name.split(".")):
            raise ValueError(f"plugin {name!r}: not an absolute module name (give it as you would import it, e.g. 'my_pkg.strategies')")
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"cannot import plugin {name!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the plugin's own code failed: one line naming it
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ValueError(f"plugin {name!r} failed while being imported ({type(exc).__name__}: {first})") from None
