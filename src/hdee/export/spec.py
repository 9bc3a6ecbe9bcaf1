"""What an export holds: one strategy's ensemble of a run, its method and what the method needs.

Everything is settled here, before a byte is written: the members (final or all), the method
(refused in one line when the exported model cannot compute it), the prior of a cached-prior
method (estimated now, on one domain's validation windows, exactly as evaluation estimates it),
and for a routed method the prefix model and the run's own router (built from train splits
only, as evaluation builds it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hdee.ensemble.experts import ExpertInfo, check_compatible, load_model, read_expert
from hdee.ensemble.routers import Router
from hdee.ensemble.scoring import read_tokens
from hdee.core.errors import ConfigError, EnsembleError
from hdee.evaluation.sampling import domain_prior
from hdee.export.configuration_hdee_ensemble import METHODS, NEEDS_PRIOR, ROUTER_KINDS, routed_k
from hdee.registry import MIXING_METHODS

if TYPE_CHECKING:
    from hdee.run import Run

ENSEMBLE_KINDS = ("final", "all")


@dataclass
class ExportSpec:
    run_root: Path
    strategy: str
    kind: str  # final | all
    method: str
    members: list[str]  # expert ids, mixed in this order
    infos: dict[str, ExpertInfo]  # every model the export holds (members, then the prefix model)
    top_k: int = 2
    log_prior: np.ndarray | None = None
    prior_domain: str | None = None
    prefix_model: str | None = None  # routed: the id of the model that scores the first R tokens
    prefix_reason: str | None = None
    route_tokens: int = 0
    router: Router | None = None
    router_file: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """The networks in the order the exported model holds them: members, then the prefix model."""
        extra = [self.prefix_model] if self.prefix_model and self.prefix_model not in self.members else []
        return [*self.members, *extra]


def check_method(method: str) -> None:
    """Refuse, in one line, a method the exported model cannot compute on its own."""
    entry = MIXING_METHODS.find(method)
    if entry is None:
        raise ConfigError(f"--method {method!r}: unknown mixing method (known: {', '.join(MIXING_METHODS.names())})")
    if entry.oracle:
        raise EnsembleError(f"--method {method}: cannot be exported: it picks its expert by the scored text itself "
                            f"(an oracle); exportable: {', '.join(METHODS)}, routed-top<k>")
    if method not in METHODS and not routed_k(method):
        raise EnsembleError(f"--method {method}: cannot be exported: the exported model computes only "
                            f"{', '.join(METHODS)} and routed-top<k> without hdee")


def _members(run: "Run", strategy: str, kind: str) -> list[str]:
    from hdee.run import ensemble_specs

    if kind not in ENSEMBLE_KINDS:
        raise ConfigError(f"--ensemble {kind!r}: use one of {', '.join(ENSEMBLE_KINDS)}")
    specs = ensemble_specs(run.plan, run.layout, kind)
    if strategy not in specs:
        raise EnsembleError(f"{run.layout.plan_json}: no strategy {strategy!r} (has: {', '.join(specs)})")
    return list(specs[strategy].experts)


def export_spec(run: "Run", strategy: str, method: str, kind: str = "final", prior_domain: str | None = None) -> ExportSpec:
    """Everything `hdee export` writes, resolved and checked (the router built if the run lacks it)."""
    from hdee.ensemble.routing import ensure_router, pick_prefix_model

    check_method(method)
    ids = _members(run, strategy, kind)
    dirs = run.experts
    infos = {e: read_expert(dirs[e]) for e in ids}
    check_compatible(list(infos.values()))
    spec = ExportSpec(run.layout.root, strategy, kind, method, ids, infos, top_k=run.cfg.eval.top_k)
    if method in NEEDS_PRIOR:
        if prior_domain is None:
            raise ConfigError(f"{method} fixes its prior at export: name the domain it is estimated on with --prior-domain "
                              f"(one of {', '.join(run.cfg.eval_domains)})")
        spec.log_prior, spec.prior_domain = domain_prior(run, ids, prior_domain), prior_domain
    elif prior_domain is not None:
        raise ConfigError(f"--prior-domain goes with a cached-prior method ({', '.join(NEEDS_PRIOR)}), not {method}")
    if (k := routed_k(method)):
        every = {e: read_expert(d) for e, d in dirs.items()}
        spec.prefix_model, spec.prefix_reason = pick_prefix_model(run.cfg, every, ids)
        spec.infos[spec.prefix_model] = every[spec.prefix_model]
        spec.route_tokens = run.cfg.route_tokens
        if len(ids) > 1 and k < len(ids):
            if run.cfg.routing.router not in ROUTER_KINDS:
                raise ConfigError(f"routing.router {run.cfg.routing.router!r}: the exported model computes "
                                  f"{', '.join(ROUTER_KINDS)} routers only")
            spec.router, spec.router_file = ensure_router(run.cfg, run.layout, ids, every, spec.prefix_model, read_tokens,
                                                          lambda: load_model(every[spec.prefix_model].path))
    return spec
