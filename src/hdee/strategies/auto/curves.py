"""Difficulty curves of the `auto` strategy: loss against tokens per (domain, size). Pure functions.

A domain's difficulty at one model size is a saturating curve of validation loss against the
tokens an expert has trained on it:

    L(t) = E + A * (t / t_ref) ** -alpha,     E >= 0, A >= 0, alpha in [0.02, 2]

`t_ref` is the largest token count of the points fitted (it only conditions the numbers). For a
fixed alpha the model is linear in (E, A), so each alpha of a log-spaced grid is solved exactly by
a two-variable non-negative least squares; the alpha with the lowest (Huber-reweighted) error
wins. A single point, points at one token count, or a loss that does not fall give a flat curve
(A = 0): it never crashes and it says "more compute buys nothing measurable here".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from hdee.core.errors import PlanError

ALPHAS = tuple(float(a) for a in np.geomspace(0.02, 2.0, 120))
HUBER_ROUNDS = 6


@dataclass(frozen=True)
class Curve:
    """L(t) = E + A * (t / t_ref) ** -alpha; `kind` says how it was obtained."""

    E: float
    A: float
    alpha: float
    t_ref: float
    kind: str = "fit"  # fit | flat | shifted from <size>
    points: int = 0
    rmse: float = 0.0

    def predict(self, tokens: float) -> float:
        if self.A == 0.0:
            return self.E
        return self.E + self.A * (max(float(tokens), 1.0) / self.t_ref) ** -self.alpha

    def shifted(self, delta: float, note: str) -> "Curve":
        """The same curve moved by `delta` (the seed models' loss gap between two sizes)."""
        return replace(self, E=max(0.0, self.E + delta), kind=note)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Curve":
        return cls(**d)


def _nnls2(phi: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """min sum w (y - E - A phi)^2 with E, A >= 0; returns (E, A, weighted SSE)."""
    sw, swp, swpp = w.sum(), (w * phi).sum(), (w * phi * phi).sum()
    swy, swpy = (w * y).sum(), (w * phi * y).sum()
    candidates = []
    det = sw * swpp - swp * swp
    if det > 1e-12 * max(sw * swpp, 1e-300):
        E = (swpp * swy - swp * swpy) / det
        A = (sw * swpy - swp * swy) / det
        if E >= 0 and A >= 0:
            candidates.append((E, A))
    candidates.append((max(0.0, swy / sw), 0.0))  # A = 0: flat
    if swpp > 0:
        candidates.append((0.0, max(0.0, swpy / swpp)))  # E = 0
    best = None
    for E, A in candidates:
        sse = float((w * (y - E - A * phi) ** 2).sum())
        if best is None or sse < best[2] - 1e-15:
            best = (float(E), float(A), sse)
    return best  # type: ignore[return-value]


def _fit_weighted(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float]:
    best = None
    for alpha in ALPHAS:
        E, A, sse = _nnls2(x**-alpha, y, w)
        if best is None or sse < best[3] - 1e-15:
            best = (E, A, alpha, sse)
    return best  # type: ignore[return-value]


def fit_curve(tokens: Sequence[float], losses: Sequence[float], where: str = "curve") -> Curve:
    """Fit L(t) = E + A (t/t_ref)^-alpha to (tokens, loss) points; robust to one outlier.

    Points with a non-finite loss or tokens <= 0 are dropped. No point left: PlanError naming
    `where`. One point, one token count, or no decrease: a flat curve at the (weighted) mean.
    """
    t = np.asarray(tokens, dtype=float)
    y = np.asarray(losses, dtype=float)
    if t.shape != y.shape:
        raise PlanError(f"{where}: {t.size} token counts for {y.size} losses")
    keep = np.isfinite(t) & np.isfinite(y) & (t > 0)
    t, y = t[keep], y[keep]
    if t.size == 0:
        raise PlanError(f"{where}: no finite validation loss to fit a difficulty curve to")
    t_ref = float(t.max())
    if t.size == 1 or np.ptp(t) == 0:
        return Curve(E=float(y.mean()), A=0.0, alpha=0.0, t_ref=t_ref, kind="flat", points=int(t.size),
                     rmse=float(y.std()))
    x = t / t_ref
    w = np.ones_like(y)
    E, A, alpha, _ = _fit_weighted(x, y, w)
    for _ in range(HUBER_ROUNDS):  # iteratively reweighted: Huber weights from the residuals' MAD
        r = y - (E + A * x**-alpha)
        scale = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        if scale <= 1e-9:
            break
        delta = 1.345 * scale
        w = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
        E, A, alpha, _ = _fit_weighted(x, y, w)
    if A * float(x.min()) ** -alpha <= 1e-9 * max(1.0, abs(E)):  # no measurable decrease
        E = float(np.average(y, weights=w))
        rmse = float(np.sqrt(np.mean((y - E) ** 2)))
        return Curve(E=E, A=0.0, alpha=0.0, t_ref=t_ref, kind="flat", points=int(t.size), rmse=rmse)
    rmse = float(np.sqrt(np.mean((y - (E + A * x**-alpha)) ** 2)))
    return Curve(E=E, A=A, alpha=float(alpha), t_ref=t_ref, kind="fit", points=int(t.size), rmse=rmse)


def curves_by_size(
    fitted: Mapping[tuple[str, str], Curve],
    seed_loss: Mapping[str, Mapping[str, float]],
    domains: Sequence[str],
    sizes: Sequence[str],
) -> dict[str, dict[str, Curve]]:
    """A curve for every (domain, size): the fitted one, else one shifted from a fitted size.

    A size without a pilot gets the domain's piloted curve moved by the seed models' loss gap on
    that domain, `seed_loss[domain][size] - seed_loss[domain][piloted size]`: the assumption is
    that fine-tuning gains per token are a property of the domain, the size sets the level.
    """
    out: dict[str, dict[str, Curve]] = {}
    for d in domains:
        piloted = [s for s in sizes if (d, s) in fitted]
        if not piloted:
            raise PlanError(f"auto: domain {d!r} has no pilot curve")
        out[d] = {}
        for s in sizes:
            if (d, s) in fitted:
                out[d][s] = fitted[(d, s)]
                continue
            gaps = seed_loss.get(d, {})
            ref = next((p for p in piloted if p in gaps), None)
            if s not in gaps or ref is None:
                raise PlanError(
                    f"auto: no seed validation loss of size {s!r} on domain {d!r} to transfer its curve; "
                    "set auto.pilot_sizes = 'all'"
                )
            delta = float(gaps[s]) - float(gaps[ref])
            out[d][s] = fitted[(d, ref)].shifted(delta, f"shifted from {ref}")
    return out
