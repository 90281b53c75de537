"""SLOs for the capacity search: ``--slo`` parsing, verdicts with confidence, and a level's combined verdict.

A latency SLO "p_q < T" is the same statement as "P(X > T) < 1 - q/100", so each SLO reduces to a
count: k of n samples (or trials) exceed the limit. A one-sided Clopper-Pearson interval on k/n
then says PASS (the upper bound is within the allowed share), FAIL (the lower bound is above it,
and the breach persists over sub-windows), or INCONCLUSIVE (too few samples to tell). This is the
distribution-free order-statistic interval of Hahn & Meeker, *Statistical Intervals* (1991);
see ``shared/notes/capacity.md`` §2.2.

Persistence: samples under load are autocorrelated (GC pauses, bursts), so one bad 10 s sub-window
can drive the pooled bound over the line on its own. A FAIL therefore also needs the breach in at
least two sub-windows on their own point estimate (JMeter AutoStop's "sequentially N seconds",
MLRsearch's exceed ratio); a breach in one sub-window only is INCONCLUSIVE.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from lkswarm.capacity.schema import LevelVerdict, SloResult, SloSpec, Verdict
from lkswarm.capacity.special import bisect_root, incomplete_beta
from lkswarm.errors import ConfigError
from lkswarm.metrics import PHASES

DEFAULT_SLOS = ("join_response.p95<1s", "ping_rtt.p99<250ms", "media.loss_ratio<1%", "failed_ratio<0.5%")

RATIO_KEYS = ("failed_ratio", "media.loss_ratio")
PERCENTILES = ("50", "90", "95", "99", "99.9")
_LATENCY_UNITS_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "": 1.0}
_SLO_RE = re.compile(r"^\s*(?P<key>[A-Za-z_.0-9]+)\s*(?P<op>[<>=!]+)\s*(?P<number>[0-9.eE+-]+)\s*(?P<unit>[a-z%]*)\s*$")
_LATENCY_KEY_RE = re.compile(r"^(?P<phase>[a-z_]+)\.p(?P<q>[0-9.]+)$")


def parse_slo(text: str) -> SloSpec:
    """``join_response.p95<1s`` -> {"key": "join_response.p95", "limit": 1000.0, "text": ...}.

    Latency keys are ``<phase>.p<q>`` (phase from `lkswarm.metrics.PHASES`, q one of PERCENTILES)
    with a limit in ms, s or us (a bare number is ms). Ratio keys (RATIO_KEYS) take ``%`` or a bare
    fraction. Only ``<`` is accepted: every SLO is an upper limit. Raises `ConfigError` (a
    ValueError) with a one-line message naming the bad part.
    """
    match = _SLO_RE.match(text)
    if match is None:
        raise ConfigError(f"--slo {text!r}: expected KEY<LIMIT, e.g. join_response.p95<1s or failed_ratio<0.5%")
    key, op, number, unit = match["key"], match["op"], match["number"], match["unit"]
    if op != "<":
        raise ConfigError(f"--slo {text!r}: operator {op!r} is not supported; only '<' (an upper limit) is")
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"--slo {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--slo {text!r}: the limit {number!r} must be a positive number")
    if key in RATIO_KEYS:
        return {"key": key, "limit": _ratio_limit(text, value, unit), "text": text.strip()}
    latency = _LATENCY_KEY_RE.match(key)
    if latency is None:
        raise ConfigError(f"--slo {text!r}: unknown key {key!r}; use <phase>.p<q> or one of {', '.join(RATIO_KEYS)}")
    if latency["phase"] not in PHASES:
        raise ConfigError(f"--slo {text!r}: unknown phase {latency['phase']!r}; known: {', '.join(PHASES)}")
    if latency["q"] not in PERCENTILES:
        raise ConfigError(f"--slo {text!r}: percentile p{latency['q']} is not one of p{', p'.join(PERCENTILES)}")
    if unit not in _LATENCY_UNITS_MS:
        raise ConfigError(f"--slo {text!r}: unit {unit!r} is not a time unit (ms, s, us; a bare number is ms)")
    return {"key": key, "limit": value * _LATENCY_UNITS_MS[unit], "text": text.strip()}


def _ratio_limit(text: str, value: float, unit: str) -> float:
    if unit == "%":
        value /= 100.0
    elif unit:
        raise ConfigError(f"--slo {text!r}: unit {unit!r} does not fit a ratio; use % or a fraction")
    if value > 1.0:
        raise ConfigError(f"--slo {text!r}: a ratio limit must be at most 100% (or 1.0)")
    return value


def is_ratio_key(key: str) -> bool:
    """True for the ratio SLOs (failed_ratio, media.loss_ratio), False for latency percentiles."""
    return key in RATIO_KEYS


def percentile_of(key: str) -> float:
    """The percentile of a latency key: "ping_rtt.p99.9" -> 99.9."""
    return float(key.rsplit(".p", 1)[1])


def phase_of(key: str) -> str:
    """The phase of a latency key: "ping_rtt.p99.9" -> "ping_rtt" (the percentile may hold a dot itself)."""
    return key.rsplit(".p", 1)[0]


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (the ceil(q/100 * n)-th smallest value); `values` not empty."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def binomial_bounds(exceeding: int, n: int, confidence: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds (low, high) on a proportion, from `exceeding` of `n`.

    high solves P(X <= k | p) = 1 - confidence, i.e. I_p(k+1, n-k) = confidence (Beta quantile);
    low solves P(X >= k | p) = 1 - confidence, i.e. I_p(k, n-k+1) = 1 - confidence. Each is a
    one-sided bound at `confidence` (not a two-sided interval). low = 0 when k = 0, high = 1 when
    k = n; n = 0 gives (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n < 0 or not 0 <= exceeding <= n:
        raise ValueError(f"need 0 <= exceeding <= n, got exceeding={exceeding}, n={n}")
    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    k = exceeding
    # The k = 0 and k = n ends have closed forms ((1-p)^n = alpha, p^n = alpha): exact and free.
    if k == 0:
        low = 0.0
    elif k == n:
        low = alpha ** (1.0 / n)
    else:
        low = bisect_root(lambda p: incomplete_beta(k, n - k + 1, p) - alpha, 0.0, 1.0)
    if k == n:
        high = 1.0
    elif k == 0:
        high = -math.expm1(math.log(alpha) / n)
    else:
        high = bisect_root(lambda p: incomplete_beta(k + 1, n - k, p) - confidence, 0.0, 1.0)
    return low, high


def min_samples(allowed_ratio: float, confidence: float) -> int:
    """The smallest n at which 0 exceedances PASSes: (1 - allowed)^n <= 1 - confidence.

    59 for a p95 and 299 for a p99 at 95 % confidence (n >= ln(alpha) / ln(1 - allowed)).
    """
    if not 0.0 < allowed_ratio < 1.0:
        raise ValueError(f"allowed_ratio must be in (0, 1), got {allowed_ratio}")
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log1p(-allowed_ratio)))
    # Guard the float rounding of the closed form against the bound `judge` actually applies.
    while n > 1 and binomial_bounds(0, n - 1, confidence)[1] <= allowed_ratio:
        n -= 1
    while binomial_bounds(0, n, confidence)[1] > allowed_ratio:
        n += 1
    return n


def judge(
    spec: SloSpec,
    values_by_subwindow: Sequence[Sequence[float]] | None,
    trials_by_subwindow: Sequence[tuple[int, int]] | None,
    confidence: float,
) -> SloResult:
    """One SLO's verdict over a level's hold window, split into sub-windows.

    Latency SLOs read `values_by_subwindow` (ms); ratio SLOs read `trials_by_subwindow` as
    (failures, trials) per sub-window. The other argument is ignored and may be None.
    """
    key, limit = spec["key"], spec["limit"]
    if is_ratio_key(key):
        windows = [(f, t) for f, t in (trials_by_subwindow or []) if t > 0]
        exceeding, samples = sum(f for f, _ in windows), sum(t for _, t in windows)
        allowed = limit
        observed = exceeding / samples if samples else None
        breached = sum(1 for f, t in windows if f / t >= limit)
        headroom = None if observed is None else 1.0 - observed / limit
        subwindows = len(windows)
    else:
        q = percentile_of(key)
        chunks = [chunk for chunk in (values_by_subwindow or []) if chunk]
        pooled = [value for chunk in chunks for value in chunk]
        samples = len(pooled)
        exceeding = sum(1 for value in pooled if value >= limit)  # `<` is strict: a value at the limit breaks it
        allowed = 1.0 - q / 100.0
        observed = nearest_rank(pooled, q) if pooled else None
        breached = sum(1 for chunk in chunks if nearest_rank(chunk, q) >= limit)
        # An observed 0 ms has unbounded headroom; report none rather than infinity (JSON has no inf).
        headroom = limit / observed - 1.0 if observed else None
        subwindows = len(chunks)
    low, high = binomial_bounds(exceeding, samples, confidence)
    return {
        "verdict": _verdict(samples, low, high, allowed, subwindows, breached),
        "observed": observed,
        "limit": limit,
        "samples": samples,
        "exceeding": exceeding,
        "allowed_ratio": allowed,
        "bound_low": low,
        "bound_high": high,
        "confidence": confidence,
        "subwindows": subwindows,
        "subwindows_breached": breached,
        "headroom": headroom,
    }


def judge_count(spec: SloSpec, failures: int, trials: int, confidence: float) -> SloResult:
    """A ratio SLO over a whole population, not a sample of one: ``failed_ratio``.

    A level's participants are all of its participants, so their failed share has no sampling error to
    bound: PASS when failures / trials is within the limit, FAIL otherwise. A binomial bound would
    demand 299 participants before 0 failures could pass a 1 % limit, and a small room could never
    pass. The bounds are still reported, for whoever reads the level as a sample of a larger run.
    """
    limit = spec["limit"]
    observed = failures / trials if trials > 0 else None
    low, high = binomial_bounds(failures, trials, confidence)
    # `failed_ratio<0.5%` is strict, as written: 1 failure in 200 is 0.5 %, not under it.
    verdict: Verdict = "INCONCLUSIVE" if observed is None else "PASS" if observed < limit else "FAIL"
    return {
        "verdict": verdict,
        "observed": observed,
        "limit": limit,
        "samples": trials,
        "exceeding": failures,
        "allowed_ratio": limit,
        "bound_low": low,
        "bound_high": high,
        "confidence": confidence,
        "subwindows": 1 if trials else 0,
        "subwindows_breached": 1 if verdict == "FAIL" else 0,
        "headroom": None if observed is None else 1.0 - observed / limit,
    }


def _verdict(samples: int, low: float, high: float, allowed: float, subwindows: int, breached: int) -> Verdict:
    if samples == 0:
        return "INCONCLUSIVE"
    if high <= allowed:
        return "PASS"
    if low > allowed and breached >= min(2, subwindows):
        return "FAIL"
    # Either too few samples to bound the share on either side, or a pooled breach that one
    # sub-window carries alone (not persistent): the caller extends the hold or counts it as FAIL.
    return "INCONCLUSIVE"


def format_value(key: str, value: float) -> str:
    """A value in the SLO's own terms: "1.4 s", "230 ms", "0.52%"."""
    if is_ratio_key(key):
        return f"{value * 100:.3g}%"
    if value >= 1000.0:
        return f"{value / 1000.0:.3g} s"
    return f"{value:.3g} ms"


def combine(results: Mapping[str, SloResult]) -> tuple[LevelVerdict, str, str | None]:
    """A level's verdict from its SLO results: (verdict, reason in words, limiting key or None).

    FAIL if any SLO FAILs; the limiting key is the FAIL with the largest observed / limit. Else
    INCONCLUSIVE if any is (or if there are no results at all: nothing was shown to pass). Else PASS.
    """
    failed = {key: r for key, r in results.items() if r["verdict"] == "FAIL"}
    if failed:
        ranked = sorted(failed, key=lambda key: _load_ratio(failed[key]), reverse=True)
        reason = "; ".join(_describe_breach(key, failed[key]) for key in ranked)
        return "FAIL", reason, ranked[0]
    unsure = {key: r for key, r in results.items() if r["verdict"] == "INCONCLUSIVE"}
    if unsure:
        return "INCONCLUSIVE", "; ".join(_describe_unsure(key, r) for key, r in unsure.items()), None
    if not results:
        return "INCONCLUSIVE", "no SLO was evaluated", None
    return "PASS", f"all {len(results)} SLOs pass", None


def _load_ratio(result: SloResult) -> float:
    observed = result["observed"]
    return 0.0 if observed is None else observed / result["limit"]


def _describe_breach(key: str, result: SloResult) -> str:
    observed = result["observed"]
    shown = "?" if observed is None else format_value(key, observed)
    return (
        f"{key} {shown} > {format_value(key, result['limit'])} "
        f"({result['subwindows_breached']}/{result['subwindows']} sub-windows)"
    )


def _describe_unsure(key: str, result: SloResult) -> str:
    if result["samples"] == 0:
        return f"{key}: no samples"
    if result["bound_low"] > result["allowed_ratio"]:
        return (
            f"{key}: breached in {result['subwindows_breached']}/{result['subwindows']} sub-windows only "
            f"(not persistent)"
        )
    if result["exceeding"] == 0 and result["allowed_ratio"] < 1.0:
        need = min_samples(result["allowed_ratio"], result["confidence"])
        return f"{key}: {result['samples']} samples, {need} needed to pass"
    return (
        f"{key}: {result['exceeding']}/{result['samples']} exceed, "
        f"{result['bound_low']:.3g}..{result['bound_high']:.3g} around the allowed {result['allowed_ratio']:.3g}"
    )
