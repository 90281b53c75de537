"""Kneedle, OLS with prediction bands, and the USL fit of `lkswarm.capacity.fits`, plus Student's t."""

from __future__ import annotations

import random

import pytest

from lkswarm.capacity.fits import knee_fit_dict, kneedle, ols, ols_fit_dict, usl, usl_fit_dict
from lkswarm.capacity.special import student_t_cdf, student_t_quantile


def test_student_t_quantiles_match_tables() -> None:
    assert student_t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-4)
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert student_t_quantile(0.95, 30) == pytest.approx(1.6973, abs=1e-4)
    assert student_t_quantile(0.025, 10) == pytest.approx(-2.2281, abs=1e-4)
    assert student_t_quantile(0.5, 3) == 0.0
    assert student_t_cdf(0.0, 5) == pytest.approx(0.5)


def test_kneedle_reproduces_the_papers_figure_2() -> None:
    # kneed's DataGenerator.figure2() (Satopää et al. 2011, Fig. 2), as printed in kneed's README: knee 0.222.
    xs = [0.0, 0.111, 0.222, 0.333, 0.444, 0.556, 0.667, 0.778, 0.889, 1.0]
    ys = [-5.0, 0.263, 1.897, 2.692, 3.163, 3.475, 3.696, 3.861, 3.989, 4.091]
    assert kneedle(xs, ys, increasing=True, convex=False) == 0.222


def test_kneedle_on_a_latency_hockey_stick() -> None:
    # kneed's convex-increasing test curve: the knee is at x = 7.
    assert kneedle(list(range(10)), [1, 2, 3, 4, 5, 10, 15, 20, 40, 100]) == 7


def test_kneedle_on_a_one_over_x_curve() -> None:
    xs = [i / 10 for i in range(1, 51)]
    knee = kneedle(xs, [1 / x for x in xs], increasing=False, convex=True)
    assert knee is not None
    assert 0.4 <= knee <= 1.0


def test_kneedle_finds_no_knee_on_a_line_or_too_few_points() -> None:
    assert kneedle([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) is None
    assert kneedle([1, 2], [1, 5]) is None
    assert kneedle([1, 2, 3], [5, 5, 5]) is None


def test_ols_recovers_a_line_and_its_band_contains_the_truth() -> None:
    rng = random.Random(7)
    intercept, slope = 0.2, 0.001  # cores = 0.2 + 0.001 * egress pps
    xs = [float(x) for x in range(500, 10_001, 500)]
    ys = [intercept + slope * x + rng.gauss(0.0, 0.05) for x in xs]
    fit = ols(xs, ys)
    assert fit.n == 20
    assert fit.intercept == pytest.approx(intercept, abs=0.06)
    assert fit.slope == pytest.approx(slope, rel=0.02)
    assert fit.r2 > 0.99
    assert fit.residual_sd == pytest.approx(0.05, rel=0.5)
    for x in (500.0, 5000.0, 12_000.0):
        low, high = fit.band(x)
        assert low < intercept + slope * x < high
        assert fit.band(x, 0.99)[1] - fit.band(x, 0.99)[0] > high - low
    # Inverse prediction: where the line reaches 8 cores, and the x range the band allows.
    target = 8.0
    x_true = (target - intercept) / slope
    assert fit.inverse(target) == pytest.approx(x_true, rel=0.02)
    x_low, x_high = fit.inverse_band(target)
    assert x_low is not None and x_high is not None
    assert x_low < fit.inverse(target) < x_high
    assert x_low < x_true < x_high
    assert fit.band(x_low)[1] == pytest.approx(target)
    assert fit.band(x_high)[0] == pytest.approx(target)


def test_ols_without_a_significant_slope_has_an_unbounded_inverse_band() -> None:
    fit = ols([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 0.0, 2.0])
    assert fit.inverse_band(2.0) == (None, None)


def test_ols_needs_three_points_and_distinct_xs() -> None:
    with pytest.raises(ValueError, match="3 points"):
        ols([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="same"):
        ols([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def _usl_curve(ns: list[float], lam: float, sigma: float, kappa: float) -> list[float]:
    return [lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1)) for n in ns]


@pytest.mark.parametrize(
    ("ns", "lam", "sigma", "kappa"),
    [
        ([1, 2, 4, 8, 16, 32, 64, 128], 1000.0, 0.05, 0.0005),
        ([100, 200, 400, 600, 800, 1000, 1500, 2000, 3000], 50.0, 0.02, 2e-6),
    ],
)
def test_usl_recovers_a_noiseless_curve(ns: list[float], lam: float, sigma: float, kappa: float) -> None:
    fit = usl(ns, _usl_curve(ns, lam, sigma, kappa))
    assert fit is not None
    assert fit.lam == pytest.approx(lam, rel=0.1)
    assert fit.sigma == pytest.approx(sigma, rel=0.1)
    assert fit.kappa == pytest.approx(kappa, rel=0.1)
    assert fit.r2 > 0.999
    n_star = int(((1 - sigma) / kappa) ** 0.5)
    assert fit.n_star is not None and abs(fit.n_star - n_star) <= max(1, n_star // 20)
    assert fit.predict(ns[3]) == pytest.approx(_usl_curve([ns[3]], lam, sigma, kappa)[0], rel=1e-3)


def test_usl_without_coherency_has_no_peak() -> None:
    ns = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    fit = usl(ns, _usl_curve(ns, 10.0, 0.1, 0.0))
    assert fit is not None
    assert fit.kappa < 1e-9
    assert fit.n_star is None or fit.n_star > 10_000


def test_usl_needs_six_points() -> None:
    assert usl([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) is None


def test_fit_dicts() -> None:
    fit = ols([1.0, 2.0, 3.0, 4.0], [1.1, 2.0, 2.9, 4.2])
    as_dict = ols_fit_dict(fit, x="server egress packets/s", y="server cores")
    assert as_dict["kind"] == "ols" and as_dict["ok"] is True and as_dict["n"] == 4
    assert set(as_dict["coefficients"]) == {"intercept", "slope", "residual_sd", "x_mean", "sxx"}
    assert ols_fit_dict(None, x="a", y="b", reason="too few levels")["reason"] == "too few levels"
    ns = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    usl_dict = usl_fit_dict(usl(ns, _usl_curve(ns, 10.0, 0.05, 0.001)), x="participants", y="egress packets/s")
    assert usl_dict["ok"] is True
    assert set(usl_dict["coefficients"]) == {"lambda", "sigma", "kappa", "n_star"}
    assert usl_fit_dict(None, x="a", y="b")["ok"] is False
    knee = knee_fit_dict(7.0, x="participants", y="join p95 ms", points=10)
    assert knee["coefficients"] == {"sensitivity": 1.0, "knee": 7.0}
    assert knee_fit_dict(None, x="a", y="b", points=2)["reason"] == "fewer than 3 levels"
