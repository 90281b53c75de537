"""Offline models of the per-level series: the knee (Kneedle), a linear resource model (OLS), and the USL.

All three run after the search, on one value per level (hold-window means or percentiles); they
are reported next to the capacity, never used to stop the search (``shared/notes/capacity.md`` §2.4,
§2.5, §4.2). Pure Python: a search has 5-30 levels, so nothing here needs numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lkswarm.capacity.schema import Fit
from lkswarm.capacity.special import student_t_quantile

# ---------------------------------------------------------------------------------------------
# Kneedle
# ---------------------------------------------------------------------------------------------


def kneedle(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    increasing: bool = True,
    convex: bool = True,
    sensitivity: float = 1.0,
) -> float | None:
    """The x of the knee of y(x), or None when there is none (or fewer than 3 points).

    Satopää, Albrecht, Irwin & Raghavan, "Finding a 'Kneedle' in a Haystack: Detecting Knee Points
    in System Behavior", ICDCS Workshops 2011 (the algorithm of PyPI ``kneed``):
    1. normalise x and y to [0, 1];
    2. the difference curve: how far the curve bulges from the chord joining its first and last
       points (y - x for concave increasing, x - y for convex increasing, and mirrored for
       decreasing curves; the paper's rotation, equivalent to kneed's flips);
    3. candidates are local maxima of the difference curve; each gets the threshold
       T = D_max - S * mean(diff(x_normalised)) with S = `sensitivity`;
    4. a candidate is the knee if the difference curve falls below T before the next local maximum.
    The first knee in x order is returned: for latency or CPU against load, the earliest sign.
    The paper's smoothing spline is left out: levels are few and already hold-window aggregates.
    """
    if len(xs) != len(ys):
        raise ValueError(f"kneedle: {len(xs)} xs but {len(ys)} ys")
    points = sorted(zip(xs, ys, strict=True))
    if len(points) < 3:
        return None
    x_span = points[-1][0] - points[0][0]
    y_min, y_max = min(y for _, y in points), max(y for _, y in points)
    if x_span <= 0 or y_max <= y_min:
        return None
    x_norm = [(x - points[0][0]) / x_span for x, _ in points]
    y_norm = [(y - y_min) / (y_max - y_min) for _, y in points]
    # The chord from the first to the last normalised point is y = x (increasing) or 1 - x.
    chord = x_norm if increasing else [1.0 - x for x in x_norm]
    sign = -1.0 if convex else 1.0  # a convex curve lies below its chord, a concave one above
    difference = [sign * (y - c) for y, c in zip(y_norm, chord, strict=True)]
    mean_dx = (x_norm[-1] - x_norm[0]) / (len(x_norm) - 1)
    return _first_knee([x for x, _ in points], difference, sensitivity * mean_dx)


def _first_knee(xs: Sequence[float], difference: list[float], drop: float) -> float | None:
    candidate: int | None = None
    threshold = 0.0
    for i in range(1, len(difference)):
        is_local_max = i < len(difference) - 1 and difference[i - 1] < difference[i] >= difference[i + 1]
        if is_local_max:
            # A new local maximum replaces the pending candidate (the paper's reset rule).
            candidate, threshold = i, difference[i] - drop
        elif candidate is not None and difference[i] < threshold:
            return xs[candidate]
    return None


# ---------------------------------------------------------------------------------------------
# Ordinary least squares with prediction bands
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OlsFit:
    """y = intercept + slope * x, with what the prediction band needs (Draper & Smith, ch. 1-3)."""

    intercept: float
    slope: float
    r2: float  # 0 when y does not vary (nothing to explain)
    n: int
    residual_sd: float  # s = sqrt(SSE / (n - 2))
    x_mean: float
    sxx: float  # sum of (x - x_mean)^2

    def predict(self, x: float) -> float:
        return self.intercept + self.slope * x

    def _half_width(self, x: float, confidence: float) -> float:
        t = student_t_quantile(0.5 + confidence / 2.0, self.n - 2)
        return t * self.residual_sd * math.sqrt(1.0 + 1.0 / self.n + (x - self.x_mean) ** 2 / self.sxx)

    def band(self, x: float, confidence: float = 0.95) -> tuple[float, float]:
        """Two-sided prediction band for one new y at x: ŷ ± t·s·√(1 + 1/n + (x - x̄)²/Sxx)."""
        half = self._half_width(x, confidence)
        y_hat = self.predict(x)
        return y_hat - half, y_hat + half

    def inverse(self, y: float) -> float:
        """The x where the fitted line reaches y. Raises ValueError on a flat line."""
        if self.slope == 0.0:
            raise ValueError("ols: a flat line (slope 0) cannot be inverted")
        return (y - self.intercept) / self.slope

    def inverse_band(self, y: float, confidence: float = 0.95) -> tuple[float | None, float | None]:
        """The x interval where the prediction band contains y (inverse prediction, Fieller's method).

        Solves (ŷ(x) - y)² = t²s²(1 + 1/n + (x - x̄)²/Sxx) for x (Draper & Smith §3.2, "inverse
        regression"). When the slope is not significant at `confidence` (b² <= t²s²/Sxx) the band
        never leaves y on one side and the interval is unbounded: None stands for that side.
        """
        t = student_t_quantile(0.5 + confidence / 2.0, self.n - 2)
        k = (t * self.residual_sd) ** 2
        c0 = self.predict(self.x_mean) - y
        a = self.slope**2 - k / self.sxx
        if a <= 0.0:
            return None, None
        b_half = self.slope * c0
        c = c0 * c0 - k * (1.0 + 1.0 / self.n)
        # c < 0 (y lies inside the band at the mean), so the discriminant is positive.
        root = math.sqrt(max(b_half * b_half - a * c, 0.0))
        u1, u2 = (-b_half - root) / a, (-b_half + root) / a
        return self.x_mean + min(u1, u2), self.x_mean + max(u1, u2)


def ols(xs: Sequence[float], ys: Sequence[float]) -> OlsFit:
    """Least-squares line through (x, y); needs n >= 3 points and at least two distinct xs."""
    n = len(xs)
    if n != len(ys):
        raise ValueError(f"ols: {n} xs but {len(ys)} ys")
    if n < 3:
        raise ValueError(f"ols: needs at least 3 points, got {n}")
    x_mean, y_mean = sum(xs) / n, sum(ys) / n
    sxx = sum((x - x_mean) ** 2 for x in xs)
    if sxx <= 0.0:
        raise ValueError("ols: every x is the same")
    sxy = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = y_mean - slope * x_mean
    sse = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    sst = sum((y - y_mean) ** 2 for y in ys)
    return OlsFit(
        intercept=intercept,
        slope=slope,
        r2=1.0 - sse / sst if sst > 0.0 else 0.0,
        n=n,
        residual_sd=math.sqrt(sse / (n - 2)),
        x_mean=x_mean,
        sxx=sxx,
    )


# ---------------------------------------------------------------------------------------------
# Universal Scalability Law
# ---------------------------------------------------------------------------------------------

USL_MIN_POINTS = 6
# The coarse grid: contention sigma in [0, 1), coherency kappa 0 or 1e-12 .. 1 by quarter decades.
_SIGMA_GRID = [i / 100.0 for i in range(100)]
_KAPPA_GRID = [0.0] + [10.0 ** (e / 4.0) for e in range(-48, 1)]


@dataclass(frozen=True)
class UslFit:
    """Gunther's Universal Scalability Law X(N) = λN / (1 + sigma(N - 1) + κN(N - 1)).

    Gunther, *Guerrilla Capacity Planning* (Springer 2007), ch. 4-6; N* = ⌊√((1 - sigma)/κ)⌋ is where
    X peaks (none without coherency cost, κ = 0).
    """

    lam: float  # throughput of one unit of load (the ideal slope)
    sigma: float  # contention (serial fraction)
    kappa: float  # coherency (crosstalk) cost
    r2: float
    n: int
    n_star: int | None

    def predict(self, n: float) -> float:
        return self.lam * _usl_shape(n, self.sigma, self.kappa)


def _usl_shape(n: float, sigma: float, kappa: float) -> float:
    return n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


def _usl_sse(ns: Sequence[float], xs: Sequence[float], sigma: float, kappa: float) -> tuple[float, float]:
    """(SSE, λ) for fixed sigma and κ: X = λ·g(N) is linear in λ, so λ = Σ X g / Σ g² is exact."""
    shapes = [_usl_shape(n, sigma, kappa) for n in ns]
    lam = sum(x * g for x, g in zip(xs, shapes, strict=True)) / sum(g * g for g in shapes)
    lam = max(lam, 0.0)
    return sum((x - lam * g) ** 2 for x, g in zip(xs, shapes, strict=True)), lam


def usl(ns: Sequence[float], xs: Sequence[float]) -> UslFit | None:
    """Fit λ, sigma, κ >= 0 (sigma <= 1) by least squares on X; None with fewer than 6 usable points.

    The method of ``shared/notes/capacity.md`` §2.5: a grid over (sigma, κ) with λ in closed form,
    then a compass search (Kolda, Lewis & Torczon, SIAM Review 45(3), 2003) from the best grid
    point, shrinking sigma steps additively and κ steps multiplicatively (κ spans many decades).
    Schwartz's "Practical Scalability Analysis with the USL" (VividCortex, 2015) fits the same
    model by nonlinear least squares.
    """
    if len(ns) != len(xs):
        raise ValueError(f"usl: {len(ns)} ns but {len(xs)} xs")
    pairs = [(n, x) for n, x in zip(ns, xs, strict=True) if n > 0 and x >= 0 and math.isfinite(x)]
    if len(pairs) < USL_MIN_POINTS or all(x == 0 for _, x in pairs):
        return None
    n_values, x_values = [n for n, _ in pairs], [x for _, x in pairs]
    best = min(
        (_usl_sse(n_values, x_values, sigma, kappa)[0], sigma, kappa) for sigma in _SIGMA_GRID for kappa in _KAPPA_GRID
    )
    sse, sigma, kappa = _refine(n_values, x_values, best)
    _, lam = _usl_sse(n_values, x_values, sigma, kappa)
    mean = sum(x_values) / len(x_values)
    sst = sum((x - mean) ** 2 for x in x_values)
    n_star = math.floor(math.sqrt((1.0 - sigma) / kappa)) if kappa > 0.0 else None
    return UslFit(lam, sigma, kappa, 1.0 - sse / sst if sst > 0.0 else 0.0, len(pairs), n_star)


def _refine(ns: Sequence[float], xs: Sequence[float], start: tuple[float, float, float]) -> tuple[float, float, float]:
    sse, sigma, kappa = start
    sigma_step = 0.01
    kappa_factor = 10.0**0.25  # one grid step, then shrinking toward 1
    kappa_floor = 1e-15  # below this, κ = 0 is as good
    for _ in range(5000):
        trials = [
            (min(sigma + sigma_step, 1.0), kappa),
            (max(sigma - sigma_step, 0.0), kappa),
            (sigma, kappa * kappa_factor if kappa > 0.0 else kappa_floor),
            (sigma, kappa / kappa_factor if kappa / kappa_factor > kappa_floor else 0.0),
        ]
        improved = False
        for s, k in trials:
            trial_sse, _ = _usl_sse(ns, xs, s, k)
            if trial_sse < sse:
                sse, sigma, kappa, improved = trial_sse, s, k, True
                break
        if not improved:
            sigma_step /= 2.0
            kappa_factor = math.sqrt(kappa_factor)
            if sigma_step < 1e-10 and kappa_factor - 1.0 < 1e-10:
                break
    return sse, sigma, kappa


# ---------------------------------------------------------------------------------------------
# Report dicts
# ---------------------------------------------------------------------------------------------


def knee_fit_dict(knee_x: float | None, *, x: str, y: str, sensitivity: float = 1.0, points: int = 0) -> Fit:
    """A `schema.Fit` for a Kneedle result."""
    fit: Fit = {"kind": "kneedle", "ok": knee_x is not None, "n": points, "x": x, "y": y}
    fit["coefficients"] = {"sensitivity": sensitivity} | ({} if knee_x is None else {"knee": knee_x})
    if knee_x is None:
        fit["reason"] = "no knee" if points >= 3 else "fewer than 3 levels"
    return fit


def ols_fit_dict(result: OlsFit | None, *, x: str, y: str, reason: str = "") -> Fit:
    """A `schema.Fit` for an OLS line, with what `OlsFit.band` needs to redraw the band."""
    if result is None:
        return {"kind": "ols", "ok": False, "reason": reason or "not fitted", "x": x, "y": y}
    fit: Fit = {"kind": "ols", "ok": True, "r2": result.r2, "n": result.n, "x": x, "y": y}
    fit["coefficients"] = {
        "intercept": result.intercept,
        "slope": result.slope,
        "residual_sd": result.residual_sd,
        "x_mean": result.x_mean,
        "sxx": result.sxx,
    }
    if reason:
        fit["reason"] = reason
    return fit


def usl_fit_dict(result: UslFit | None, *, x: str, y: str, reason: str = "") -> Fit:
    """A `schema.Fit` for a USL fit (coefficients lambda, sigma, kappa and n_star when κ > 0)."""
    if result is None:
        return {"kind": "usl", "ok": False, "reason": reason or f"fewer than {USL_MIN_POINTS} levels", "x": x, "y": y}
    coefficients = {"lambda": result.lam, "sigma": result.sigma, "kappa": result.kappa}
    if result.n_star is not None:
        coefficients["n_star"] = float(result.n_star)
    fit: Fit = {"kind": "usl", "ok": True, "coefficients": coefficients, "r2": result.r2, "n": result.n, "x": x, "y": y}
    if reason:
        fit["reason"] = reason
    return fit
