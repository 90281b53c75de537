"""k6-style pass/fail thresholds over report keys: ``join_response.p99<500ms``, ``failed==0``.

A threshold is ``KEY OP NUMBER[UNIT]``:

- ``KEY`` is a latency phase and statistic (``join_response.p99``, ``active.p95``,
  ``ping_rtt.max``, ``count``/``min``/``max``/``mean``/``pNN``/``pNN.N``, read from the
  run's HdrHistogram so any percentile works; ``reconnect`` merges ``resume`` and ``rejoin``), an outcome (``failed``,
  ``completed``, ``left``, ``not_started``, ``failed_ratio``), a participant count
  (``joined``, ``active_at_end``, …) or any numeric report path
  (``media.loss_ratio``, ``generator.cpu_s``, ``probes.frames_decoded``).
- ``OP`` is one of ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``.
- ``UNIT``: ``ms``, ``s`` or ``m`` for latencies (compared in ms) and ``_s`` keys
  (compared in s); ``%`` divides by 100 (``media.loss_ratio<1%``).

Expressions are parsed before the run, so a typo is a usage error, not a
threshold that silently never fails.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from lkswarm.errors import ConfigError
from lkswarm.metrics import PHASES, mean_of, value_at_percentile

_EXPR = re.compile(
    r"^\s*(?P<key>[A-Za-z_][\w.]*?)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<number>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s|m|%)?\s*$"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_TO_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0}
_TO_S = {"ms": 0.001, "s": 1.0, "m": 60.0}
# ``reconnect`` is a threshold-only phase: resume and rejoin samples together, the time back after a
# drop whichever way the participant came back. The reconnect-storm preset holds it, so one preset
# serves both `--reconnect-storm-mode resume` and `rejoin`.
MERGED_PHASES = {"reconnect": ("resume", "rejoin")}
LATENCY_PHASES = (*PHASES, "media_e2e", *MERGED_PHASES)
_STAT = re.compile(r"^(count|min|max|mean|p\d+(?:\.\d+)?)$")
OUTCOMES = ("completed", "left", "failed", "not_started")
PARTICIPANT_COUNTS = ("scheduled", "started", "joined", "active", "active_at_end", "alive_at_end", "departed")
SECTIONS = (
    "participants",
    "media",
    "data",
    "probes",
    "signal",
    "generator",
    "room_check",
    "latency_ms",
    "server",
    "machine",
)


@dataclass(frozen=True, slots=True)
class Threshold:
    expr: str
    key: str  # the report key it reads, e.g. latency_ms.join_response.p99
    op: str
    limit: float  # in the key's own unit (ms for latencies)

    def evaluate(self, report: dict[str, Any]) -> dict[str, Any]:
        actual = read_key(report, self.key)
        passed = actual is not None and _OPS[self.op](actual, self.limit)
        return {
            "expr": self.expr,
            "key": self.key,
            "op": self.op,
            "limit": self.limit,
            "actual": actual,
            "passed": passed,
        }


def parse_threshold(expr: str) -> Threshold:
    """Parses one expression; raises ConfigError naming what is wrong."""
    match = _EXPR.match(expr)
    if not match:
        raise ConfigError(f"threshold {expr!r}: expected KEY OP NUMBER[ms|s|m|%], e.g. join_response.p99<500ms")
    key, op, unit = match["key"], match["op"], match["unit"]
    limit = float(match["number"])
    head, _, stat = key.partition(".")
    if head in LATENCY_PHASES:
        if not _STAT.match(stat):
            raise ConfigError(f"threshold {expr!r}: {head} needs a statistic: count, min, max, mean or pNN")
        full_key = f"latency_ms.{key}"
        if unit == "%":
            raise ConfigError(f"threshold {expr!r}: a latency takes ms, s or m, not %")
        if stat == "count":
            if unit is not None:
                raise ConfigError(f"threshold {expr!r}: a count takes no unit; drop {unit!r}")
        else:
            limit *= _TO_MS[unit or "ms"]
        return Threshold(expr.strip(), full_key, op, limit)
    if key in OUTCOMES:
        full_key = f"participants.outcomes.{key}"
    elif key in PARTICIPANT_COUNTS:
        full_key = f"participants.{key}"
    elif key == "failed_ratio" or (head in SECTIONS and stat):
        full_key = key
    else:
        raise ConfigError(
            f"threshold {expr!r}: unknown key {key!r}; use a phase statistic (join_response.p99), an outcome "
            f"({', '.join(OUTCOMES)}, failed_ratio) or a report path such as media.loss_ratio"
        )
    last = full_key.rsplit(".", 1)[-1]
    if unit is not None and last == "count":
        raise ConfigError(f"threshold {expr!r}: a count takes no unit; drop {unit!r}")
    if unit == "%":
        if not (last.endswith("_ratio") or "share" in last.split("_")):
            raise ConfigError(f"threshold {expr!r}: {key} is not a ratio (…_ratio, …_share); drop the '%'")
        limit /= 100
    elif unit is not None:
        key_unit = _time_unit_of(full_key)
        if key_unit is None:
            raise ConfigError(f"threshold {expr!r}: {key} is not a time; drop the unit {unit!r}")
        limit *= (_TO_MS if key_unit == "ms" else _TO_S)[unit]
    return Threshold(expr.strip(), full_key, op, limit)


def _time_unit_of(path: str) -> str | None:
    """The unit of a report path that holds a time, from the name that carries it: ``ms`` for
    ``generator.media_lag_ms.p99`` and ``server.rtt_out_ms_mean``, ``s`` for ``generator.cpu_s``; None for
    anything else (a rate ``…_per_s`` included)."""
    for segment in reversed(path.split(".")):
        words = segment.split("_")
        for before, word in zip(["", *words], words, strict=False):
            if word in ("ms", "s") and before != "per":
                return word
    return None


def parse_thresholds(exprs: list[str]) -> list[Threshold]:
    return [parse_threshold(e) for e in exprs]


def _decoded_histogram(report: dict[str, Any], phase: str) -> HdrHistogram | None:
    histograms = report.get("histograms", {})
    merged: HdrHistogram | None = None
    for part in MERGED_PHASES.get(phase, (phase,)):
        encoded = histograms.get(part)
        histogram = HdrHistogram.decode(encoded) if encoded else None
        if histogram is None:
            continue
        if merged is None:
            merged = histogram
        else:
            merged.add(histogram)
    return merged


def _histogram_value(report: dict[str, Any], phase: str, stat: str) -> float | None:
    histogram = _decoded_histogram(report, phase)
    if histogram is None or histogram.get_total_count() == 0:
        return None
    if stat == "count":
        return float(histogram.get_total_count())
    if stat == "min":
        return float(histogram.get_min_value()) / 1000
    if stat == "max":
        return float(histogram.get_max_value()) / 1000
    if stat == "mean":
        return mean_of(histogram) / 1000
    return float(value_at_percentile(histogram, float(stat[1:]))) / 1000


def read_key(report: dict[str, Any], key: str) -> float | None:
    """The numeric value of ``key`` in ``report`` (None when absent, empty or not a number)."""
    if key == "failed_ratio":
        p = report.get("participants", {})
        scheduled = p.get("scheduled", 0)
        return p.get("outcomes", {}).get("failed", 0) / scheduled if scheduled else None
    parts = key.split(".")
    if parts[0] == "latency_ms" and len(parts) >= 3:
        phase, stat = parts[1], ".".join(parts[2:])  # a percentile may hold a dot itself: p99.9
        value = _histogram_value(report, phase, stat)
        if value is not None:
            return value
        if phase in MERGED_PHASES:
            return 0.0 if stat == "count" else None  # no samples in any part (a summary cannot be merged)
        summary = report.get("latency_ms", {}).get(phase, {})
        if not summary.get("count"):
            return 0.0 if stat == "count" else None
        return _number(summary.get({"p99.9": "p999"}.get(stat, stat)))
    node: Any = report
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return _number(node)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def evaluate(report: dict[str, Any], thresholds: list[Threshold]) -> None:
    """Fills the report's ``thresholds`` and ``passed``."""
    results = [t.evaluate(report) for t in thresholds]
    report["thresholds"] = results
    report["passed"] = all(r["passed"] for r in results)
