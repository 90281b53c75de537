"""SLO parsing, binomial bounds and verdicts of `lkswarm.capacity.slo` (pure, socket-free)."""

from __future__ import annotations

import math
import time

import pytest

from lkswarm.capacity.schema import SloResult, Verdict
from lkswarm.capacity.slo import (
    DEFAULT_SLOS,
    binomial_bounds,
    combine,
    judge,
    judge_count,
    min_samples,
    nearest_rank,
    parse_slo,
)
from lkswarm.capacity.special import incomplete_beta
from lkswarm.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "key", "limit"),
    [
        ("join_response.p95<1s", "join_response.p95", 1000.0),
        ("ping_rtt.p99<250ms", "ping_rtt.p99", 250.0),
        ("ping_rtt.p99.9<250", "ping_rtt.p99.9", 250.0),
        ("active.p50 < 1500us", "active.p50", 1.5),
        ("media.loss_ratio<1%", "media.loss_ratio", 0.01),
        ("failed_ratio<0.5%", "failed_ratio", 0.005),
        ("failed_ratio<0.005", "failed_ratio", 0.005),
    ],
)
def test_parse_slo_accepts_the_documented_forms(text: str, key: str, limit: float) -> None:
    spec = parse_slo(text)
    assert spec["key"] == key
    assert spec["limit"] == pytest.approx(limit)
    assert spec["text"] == text.strip()


def test_the_default_slos_parse() -> None:
    assert [parse_slo(text)["key"] for text in DEFAULT_SLOS] == [
        "join_response.p95",
        "ping_rtt.p99",
        "media.loss_ratio",
        "failed_ratio",
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("join_response.p95<=1s", "'<='"),
        ("join_response.p95>1s", "'>'"),
        ("nosuch.p95<1s", "'nosuch'"),
        ("join_response.p97<1s", "p97"),
        ("join_response.p95<1%", "'%'"),
        ("failed_ratio<3ms", "'ms'"),
        ("failed_ratio<150%", "100%"),
        ("join_response.p95<0", "'0'"),
        ("failed_ratio", "KEY<LIMIT"),
        ("loss<1%", "'loss'"),
    ],
)
def test_parse_slo_names_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_slo(text)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_binomial_bounds_match_known_clopper_pearson_values() -> None:
    # 0 of n: the upper bound is 1 - alpha^(1/n) (the "rule of three" family).
    assert binomial_bounds(0, 59, 0.95)[0] == 0.0
    assert binomial_bounds(0, 59, 0.95)[1] == pytest.approx(0.0495, abs=1e-4)
    assert binomial_bounds(0, 299, 0.95)[1] == pytest.approx(0.00997, abs=1e-5)
    # 5 of 100, one-sided 95 % (= the two-sided 90 % Clopper-Pearson interval): scipy's
    # beta.ppf(0.05, 5, 96) and beta.ppf(0.95, 6, 95).
    low, high = binomial_bounds(5, 100, 0.95)
    assert low == pytest.approx(0.019906, abs=2e-6)
    assert high == pytest.approx(0.102253, abs=2e-6)
    assert binomial_bounds(10, 10, 0.95)[0] == pytest.approx(0.05 ** (1 / 10))
    assert binomial_bounds(10, 10, 0.95)[1] == 1.0
    assert binomial_bounds(0, 0, 0.95) == (0.0, 1.0)


def test_binomial_bounds_are_fast_and_sane_at_a_million_samples() -> None:
    started = time.perf_counter()
    low, high = binomial_bounds(50_000, 1_000_000, 0.95)
    tiny_low, tiny_high = binomial_bounds(3, 1_000_000, 0.95)
    assert time.perf_counter() - started < 1.0
    # Normal approximation: 0.05 ± 1.645 * sqrt(0.05 * 0.95 / 1e6).
    half = 1.6449 * math.sqrt(0.05 * 0.95 / 1e6)
    assert low == pytest.approx(0.05 - half, rel=2e-3)
    assert high == pytest.approx(0.05 + half, rel=2e-3)
    # Poisson limit for 3 events: the 95 % upper bound is 7.754 / n, the lower 0.8177 / n.
    assert tiny_high == pytest.approx(7.754e-6, rel=1e-3)
    assert tiny_low == pytest.approx(0.8177e-6, rel=1e-3)


def test_incomplete_beta_matches_closed_forms() -> None:
    assert incomplete_beta(1.0, 1.0, 0.3) == pytest.approx(0.3)
    assert incomplete_beta(2.0, 1.0, 0.3) == pytest.approx(0.09)
    assert incomplete_beta(1.0, 3.0, 0.2) == pytest.approx(1 - 0.8**3)
    assert incomplete_beta(5.0, 5.0, 0.5) == pytest.approx(0.5)


def test_min_samples() -> None:
    assert min_samples(0.05, 0.95) == 59
    assert min_samples(0.01, 0.95) == 299
    assert min_samples(0.001, 0.95) == 2995


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 95) == 95.0
    assert nearest_rank(values, 99.9) == 100.0
    assert nearest_rank([3.0], 50) == 3.0


JOIN = parse_slo("join_response.p95<1s")
LOSS = parse_slo("media.loss_ratio<1%")


def test_a_clean_latency_hold_passes_with_every_field_filled() -> None:
    result = judge(JOIN, [[100.0] * 20 for _ in range(6)], None, 0.95)
    assert result["verdict"] == "PASS"
    assert result["observed"] == 100.0
    assert result["samples"] == 120
    assert result["exceeding"] == 0
    assert result["allowed_ratio"] == pytest.approx(0.05)
    assert result["bound_low"] == 0.0
    assert result["bound_high"] < 0.05
    assert result["subwindows"] == 6
    assert result["subwindows_breached"] == 0
    assert result["headroom"] == pytest.approx(9.0)
    assert result["limit"] == 1000.0
    assert result["confidence"] == 0.95


def test_too_few_latency_samples_are_inconclusive() -> None:
    result = judge(JOIN, [[100.0] * 10, [100.0] * 10], None, 0.95)
    assert result["verdict"] == "INCONCLUSIVE"
    assert result["samples"] == 20


def test_no_samples_is_inconclusive_without_an_observation() -> None:
    result = judge(JOIN, [[], []], None, 0.95)
    assert result["verdict"] == "INCONCLUSIVE"
    assert result["observed"] is None
    assert result["headroom"] is None
    assert result["subwindows"] == 0
    assert judge(LOSS, None, None, 0.95)["observed"] is None


def test_one_bad_subwindow_of_six_is_inconclusive_two_fail() -> None:
    good, bad = [100.0] * 100, [2000.0] * 100
    one = judge(JOIN, [bad, good, good, good, good, good], None, 0.95)
    assert one["bound_low"] > one["allowed_ratio"]  # the pooled bound alone would say FAIL
    assert one["subwindows_breached"] == 1
    assert one["verdict"] == "INCONCLUSIVE"
    two = judge(JOIN, [bad, good, good, bad, good, good], None, 0.95)
    assert two["verdict"] == "FAIL"
    assert two["subwindows_breached"] == 2


def test_a_single_subwindow_needs_only_itself_to_fail() -> None:
    result = judge(JOIN, [[2000.0] * 100], None, 0.95)
    assert result["verdict"] == "FAIL"
    assert result["observed"] == 2000.0
    assert result["headroom"] == pytest.approx(-0.5)


def test_ratio_verdicts() -> None:
    clean = judge(LOSS, None, [(0, 1000)] * 6, 0.95)
    assert clean["verdict"] == "PASS"
    assert clean["observed"] == 0.0
    assert clean["headroom"] == 1.0
    lossy = judge(LOSS, None, [(50, 1000)] * 6, 0.95)
    assert lossy["verdict"] == "FAIL"
    assert lossy["observed"] == pytest.approx(0.05)
    assert lossy["headroom"] == pytest.approx(-4.0)
    assert lossy["subwindows_breached"] == 6
    # 1 failure in 100 trials against a 0.5 % limit: neither bound decides.
    few = judge(parse_slo("failed_ratio<0.5%"), None, [(1, 50), (0, 50), (0, 0)], 0.95)
    assert few["verdict"] == "INCONCLUSIVE"
    assert few["samples"] == 100
    assert few["subwindows"] == 2


def _result(verdict: Verdict, observed: float | None, limit: float) -> SloResult:
    return {
        "verdict": verdict,
        "observed": observed,
        "limit": limit,
        "samples": 100,
        "exceeding": 0,
        "allowed_ratio": 0.05,
        "bound_low": 0.0,
        "bound_high": 0.1,
        "confidence": 0.95,
        "subwindows": 6,
        "subwindows_breached": 2,
        "headroom": None,
    }


def test_combine() -> None:
    passing = {"join_response.p95": _result("PASS", 100.0, 1000.0), "failed_ratio": _result("PASS", 0.0, 0.005)}
    assert combine(passing)[0] == "PASS"
    assert combine(passing)[2] is None
    unsure = passing | {"ping_rtt.p99": _result("INCONCLUSIVE", 10.0, 250.0)}
    verdict, reason, limiting = combine(unsure)
    assert (verdict, limiting) == ("INCONCLUSIVE", None)
    assert "ping_rtt.p99" in reason
    failing = unsure | {
        "join_response.p95": _result("FAIL", 1400.0, 1000.0),
        "failed_ratio": _result("FAIL", 0.02, 0.005),
    }
    verdict, reason, limiting = combine(failing)
    assert verdict == "FAIL"
    assert limiting == "failed_ratio"  # 4x its limit beats 1.4x
    assert "join_response.p95 1.4 s > 1 s" in reason
    assert "failed_ratio 2% > 0.5%" in reason
    assert combine({})[0] == "INCONCLUSIVE"


def test_an_slo_is_strict_as_written() -> None:
    """`<` means under the limit: 1 failure in 200 is 0.5 %, which `failed_ratio<0.5%` refuses (it passed)."""
    spec = parse_slo("failed_ratio<0.5%")
    assert judge_count(spec, 1, 200, 0.95)["verdict"] == "FAIL"
    assert judge_count(spec, 1, 201, 0.95)["verdict"] == "PASS"
    latency = judge(parse_slo("ping_rtt.p50<100ms"), [[100.0] * 10], None, 0.95)
    assert latency["exceeding"] == 10, "a value at the limit is not under it"
