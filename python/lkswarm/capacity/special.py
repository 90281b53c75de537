"""Special functions for the capacity statistics, in the standard library only.

The one home of the numerical pieces that `slo` (binomial bounds) and `fits` (Student's t
quantiles for prediction bands) share: the regularized incomplete beta function, Student's t
distribution, and a monotone root bisection. lkswarm keeps scipy out of its runtime
dependencies; these few functions are all the capacity analysis needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# Relative accuracy the continued fraction stops at: a few ulps of a double.
_CF_EPSILON = 3e-16
# Keeps the modified Lentz recurrences away from division by zero (Numerical Recipes' FPMIN).
_CF_TINY = 1e-300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method.

    Numerical Recipes in C, 2nd ed., §6.4 ``betacf``. It converges quickly for
    x < (a + 1) / (a + b + 2); the number of terms grows like sqrt(max(a, b)), so the
    iteration cap scales with it (binomial bounds at n = 1e6 need ~1e3 terms, not 1e6).
    """
    max_terms = 200 + int(20 * math.sqrt(max(a, b)))
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, max_terms + 1):
        m2 = 2 * m
        # Even step of the recurrence.
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _CF_TINY else _CF_TINY
        h *= d * c
        # Odd step.
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _CF_TINY else _CF_TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _CF_EPSILON:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1.

    The prefactor x^a (1-x)^b / B(a, b) is computed in log space with `math.lgamma`, so large
    a and b (binomial counts up to millions) neither overflow nor underflow.
    Numerical Recipes §6.4 ``betai``: use the fraction for I_x(a, b) or, by symmetry, for
    1 - I_{1-x}(b, a), whichever converges fast.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"incomplete_beta needs a, b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def bisect_root(
    func: Callable[[float], float],
    low: float,
    high: float,
    *,
    relative_tolerance: float = 1e-12,
    max_iterations: int = 200,
) -> float:
    """A root of a monotone `func` in [low, high], where func(low) and func(high) differ in sign.

    Stops when the bracket is narrower than `relative_tolerance` times its upper end, so that
    tiny roots (an exceedance bound of 3e-6 at n = 1e6) keep their relative precision.
    """
    f_low = func(low)
    if f_low == 0.0:
        return low
    for _ in range(max_iterations):
        middle = 0.5 * (low + high)
        f_middle = func(middle)
        if f_middle == 0.0:
            return middle
        if (f_middle < 0.0) == (f_low < 0.0):
            low, f_low = middle, f_middle
        else:
            high = middle
        if high - low <= relative_tolerance * max(abs(high), abs(low)):
            break
    return 0.5 * (low + high)


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (Abramowitz & Stegun 26.7.1 via 26.5.27)."""
    if df <= 0:
        raise ValueError(f"student_t_cdf needs df > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on `student_t_cdf` (e.g. p=0.975, df=10 -> 2.228)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    high = 1.0
    # Heavy tails at df = 1 reach 6e3 at p = 0.9999 (Cauchy); doubling finds any bracket quickly.
    while student_t_cdf(high, df) < p:
        high *= 2.0
    return bisect_root(lambda t: student_t_cdf(t, df) - p, 0.0, high)
