"""Checks a report read from a file against its contract, the TypedDicts of `lkswarm.report.schema`.

A report on disk is untrusted JSON: ``lkswarm report`` and ``lkswarm merge`` read it, and without this
check a file with the right ``schema`` string but a missing section, a count of ``-3`` or a ``NaN`` gave a
traceback, or a merged report whose counts did not add up. `validate_report` walks the TypedDicts
(`Report` and the sections under it) with `typing.get_type_hints`, so the contract is written once:

- every required key is present (but see `ADDED_SINCE_FIRST_RELEASE`), with its JSON type;
- an ``int`` is a count: a non-negative integer (but see `SIGNED_INTS`);
- every number anywhere, free-form sections included, is finite: JSON has no NaN or Infinity, and
  `parse_report_json` reads Python's ``NaN``/``Infinity`` extension as a value the walk then rejects by path;
- the outcomes add up: their sum is ``participants.scheduled``, the failure reasons' sum is
  ``outcomes.failed`` and the leave reasons' sum is ``outcomes.left`` (the README's "totals always reconcile").

Keys the TypedDicts do not name are accepted (a newer lkswarm adds keys, never changes them), as long as
their numbers are finite. Every error is one line: ``FILE: key.path: expected WHAT, got VALUE``.
"""

from __future__ import annotations

import json
import math
import types
from functools import cache
from typing import (
    Any,
    NotRequired,
    Required,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from lkswarm.errors import ReportError
from lkswarm.report.schema import SCHEMA, Report

# Keys that lkswarm.report/1 gained after its first release (5d931d6): a report written before them is
# still a report of this schema, so their absence is not an error (readers default them).
ADDED_SINCE_FIRST_RELEASE = frozenset({"participants.departed", "timeline", "rooms", "failed_participants"})
# `int` keys that are not counts: a worker killed by a signal exits with a negative status.
SIGNED_INTS = frozenset({"exit_code"})
# Free-form (``dict[str, Any]``) places that hold `lkswarm.metrics.summarize` summaries, which merge adds
# by ``count`` and the summary prints by percentile; ``*`` stands for any one key.
SUMMARY_PATHS = (
    "latency_ms.*",
    "generator.loop_lag_ms",
    "generator.media_lag_ms",
    "generator.lateness_ms",
    "media.jitter_ms",
    "media.track_subscribed_ms.*",
)
SUMMARY_FIGURES = ("min", "p50", "p90", "p99", "p999", "max", "mean")
_SHOWN_CHARS = 40  # of a bad value, in an error line


class MediaFigures(TypedDict, total=False):
    """The figures of the free-form ``media`` section (`lkswarm.media.totals`) that merge does arithmetic on
    and the summary prints; checked where present (a crashed worker's ``media`` is empty)."""

    packets_sent: int
    bytes_sent: int
    frames_sent: int
    frames_skipped: int
    frames_muted: int
    packets_received: int
    bytes_received: int
    packets_expected: int
    packets_lost: int
    loss_ratio: float | None  # None: no packet was expected (nothing to measure loss on)
    tracks_received: int
    tracks_missing: int
    foreign_datagrams: int
    keyframe_requests: int


class ThresholdRow(TypedDict):
    """What the summary and the HTML read of a ``thresholds`` row (`lkswarm.report.thresholds.evaluate`)."""

    expr: str
    actual: float | None  # None: no data for its key
    passed: bool


class _NonFinite:
    """What `parse_report_json` reads for ``NaN``, ``Infinity`` and ``-Infinity``: kept so the walk names its path."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Invalid(Exception):
    """One problem at one key path; `validate_report` turns it into a one-line ReportError."""

    def __init__(self, path: str, expected: str, value: Any) -> None:
        super().__init__(path)
        self.path = path
        self.expected = expected
        self.value = value


def parse_report_json(text: str, where: str) -> Any:
    """The JSON document in ``text``; ReportError (one line, naming ``where``) when it is not JSON."""
    try:
        return json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise ReportError(f"{where}: not a report (JSON nested too deeply)") from None


def check_schema(report: Any, where: str) -> dict[str, Any]:
    """Returns ``report`` when it is a mapping of schema lkswarm.report/1; raises ReportError otherwise."""
    if not isinstance(report, dict):
        raise ReportError(f"{where} is not a report (expected a JSON object with schema {SCHEMA!r})")
    schema = report.get("schema")
    if schema != SCHEMA:
        shown = schema.name if isinstance(schema, _NonFinite) else schema
        raise ReportError(f"{where} has schema {shown!r}; this lkswarm reads {SCHEMA!r}")
    return report


def validate_report(report: Any, where: str) -> dict[str, Any]:
    """Returns ``report`` when it keeps the lkswarm.report/1 contract; ReportError names the first key that does not."""
    checked = check_schema(report, where)
    try:
        _check(checked, Report, "")
        _check(checked["media"], MediaFigures, "media")
        _check(checked["thresholds"], list[ThresholdRow], "thresholds")
        _check_summaries(checked)
        _check_timeline(checked.get("timeline"))
        _check_histograms(checked["histograms"])
        _check_totals(checked["participants"])
    except _Invalid as bad:
        path = bad.path or "(top level)"
        if isinstance(bad.value, _Missing):
            raise ReportError(f"{where}: {path}: missing (expected {bad.expected})") from None
        raise ReportError(f"{where}: {path}: expected {bad.expected}, got {_shown(bad.value)}") from None
    except RecursionError:
        raise ReportError(f"{where}: not a report (nested too deeply)") from None
    return checked


def non_finite_path(value: Any) -> str | None:
    """The key path of the first NaN or infinity in ``value`` (``"(top level)"`` for ``value`` itself), else None."""
    try:
        _check_finite(value, "")
    except _Invalid as bad:
        return bad.path or "(top level)"
    return None


# -- the walk --------------------------------------------------------------------------------------


@cache
def _fields(typed_dict: type) -> tuple[tuple[str, Any, bool], ...]:
    """(key, type, required) of a TypedDict, in declaration order.

    Decided from the hints rather than ``__required_keys__``: under ``from __future__ import annotations``
    Python 3.11 files a ``NotRequired`` key as required there.
    """
    hints = get_type_hints(typed_dict, include_extras=True)
    total = getattr(typed_dict, "__total__", True)
    fields = []
    for key, hint in hints.items():
        origin = get_origin(hint)
        required = origin is Required or (origin is not NotRequired and total)
        fields.append((key, hint, required))
    return tuple(fields)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check(value: Any, hint: Any, path: str) -> None:
    """Raises _Invalid unless ``value`` is JSON of type ``hint`` (a TypedDict, a container, a scalar, a union)."""
    origin = get_origin(hint)
    if origin in (Required, NotRequired):
        _check(value, get_args(hint)[0], path)
    elif hint is Any:
        _check_finite(value, path)
    elif is_typeddict(hint):
        _check_object(value, hint, path)
    elif origin in (Union, types.UnionType):
        _check_union(value, get_args(hint), path)
    elif origin is list:
        if not isinstance(value, list):
            raise _Invalid(path, "a list", value)
        for i, item in enumerate(value):
            _check(item, get_args(hint)[0], f"{path}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            raise _Invalid(path, "an object", value)
        for key, item in value.items():
            _check(item, get_args(hint)[1], _join(path, key))
    else:
        _check_scalar(value, hint, path)


def _check_object(value: Any, typed_dict: type, path: str) -> None:
    if not isinstance(value, dict):
        raise _Invalid(path, "an object", value)
    named = set()
    for key, hint, required in _fields(typed_dict):
        named.add(key)
        where = _join(path, key)
        if key in value:
            _check(value[key], hint, where)
        elif required and where not in ADDED_SINCE_FIRST_RELEASE:
            raise _Invalid(where, _describe(hint), _Missing())
    for key, item in value.items():
        if key not in named:  # a key a newer lkswarm added: any JSON, numbers finite
            _check_finite(item, _join(path, key))


def _check_union(value: Any, options: tuple[Any, ...], path: str) -> None:
    if value is None and type(None) in options:
        return
    deeper: _Invalid | None = None
    for option in options:
        if option is type(None):
            continue
        try:
            _check(value, option, path)
            return
        except _Invalid as bad:
            # A value of the right kind with a bad key inside says more than "expected X or null".
            deeper = bad if bad.path != path else deeper
    if deeper is not None:
        raise deeper
    raise _Invalid(path, " or ".join("null" if a is type(None) else _describe(a) for a in options), value)


def _check_scalar(value: Any, hint: Any, path: str) -> None:
    if hint is bool:
        if not isinstance(value, bool):
            raise _Invalid(path, _describe(hint), value)
    elif hint is str:
        if not isinstance(value, str):
            raise _Invalid(path, _describe(hint), value)
    elif hint is int:
        signed = path.rsplit(".", 1)[-1] in SIGNED_INTS
        if not _is_int(value) or (value < 0 and not signed):
            raise _Invalid(path, "an integer" if signed else "a non-negative integer", value)
    elif hint is float:
        if not _is_finite_number(value):
            raise _Invalid(path, "a finite number", value)
    else:  # a type this walk does not know: the schema grew one; hold it to JSON at least
        _check_finite(value, path)


def _check_finite(value: Any, path: str) -> None:
    """Free-form JSON: anything, as long as every number in it is finite."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, _join(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")
    elif isinstance(value, _NonFinite) or (isinstance(value, float) and not math.isfinite(value)):
        raise _Invalid(path, "a finite number", value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value)
    )


# -- what the free-form sections must hold for merge and the summary to read them ------------------


def _check_summaries(report: dict[str, Any]) -> None:
    for pattern in SUMMARY_PATHS:
        for path, value in _resolve(report, pattern.split("."), ""):
            _check_summary(value, path)


def _resolve(value: Any, keys: list[str], path: str) -> list[tuple[str, Any]]:
    """The (path, value) pairs that ``keys`` (``*`` for any key) reach in ``value``; none where a key is absent."""
    if not keys:
        return [(path, value)]
    if not isinstance(value, dict):
        raise _Invalid(path, "an object", value)
    key, rest = keys[0], keys[1:]
    names = list(value) if key == "*" else [key] if key in value else []
    return [pair for name in names for pair in _resolve(value[name], rest, _join(path, name))]


def _check_summary(summary: Any, path: str) -> None:
    """A latency summary: ``count`` a non-negative integer, its percentiles finite numbers."""
    if not isinstance(summary, dict):
        raise _Invalid(path, "a latency summary (an object with count, p50, ...)", summary)
    count = summary.get("count", _Missing())
    if not _is_int(count) or count < 0:
        raise _Invalid(_join(path, "count"), "a non-negative integer", count)
    for figure in SUMMARY_FIGURES:
        value = summary.get(figure, _Missing())
        if not _is_finite_number(value):
            raise _Invalid(_join(path, figure), "a finite number", value)


def _check_timeline(timeline: Any) -> None:
    """``timeline``: ``interval_s`` and parallel series, each a list of numbers (null: no sample)."""
    if timeline is None:
        return
    if not isinstance(timeline, dict):
        raise _Invalid("timeline", "an object", timeline)
    for name, series in timeline.items():
        path = _join("timeline", name)
        if name == "interval_s":
            if not _is_finite_number(series) or series <= 0:
                raise _Invalid(path, "a positive number of seconds", series)
            continue
        if not isinstance(series, list):
            raise _Invalid(path, "a list of numbers", series)
        for i, value in enumerate(series):
            if value is not None and not _is_finite_number(value):
                raise _Invalid(f"{path}[{i}]", "a finite number or null", value)
    # Parallel series: one sample each per interval of t_s (an empty one: this run had no such figure). A short
    # series left blanks in timeline.csv, a short t_s cut the other series' samples, without a word.
    lengths = {name: len(series) for name, series in timeline.items() if name != "interval_s" and series}
    if lengths:
        first = "t_s" if "t_s" in lengths else next(iter(lengths))
        count = lengths[first]
        for name, length in lengths.items():
            if length != count:
                path = _join("timeline", name)
                raise _Invalid(path, f"as many samples as timeline.{first} ({count})", _Sum(length, "samples"))


def _check_histograms(histograms: dict[str, Any]) -> None:
    """``histograms``: each decodes (merge and the HTML report rebuild latency from them; one that does not
    failed them only after other outputs were written)."""
    from hdrh.histogram import HdrHistogram

    for name, encoded in histograms.items():
        try:
            decoded = HdrHistogram.decode(encoded)
        except Exception:  # hdrh raises bare exceptions of several kinds on bad input
            decoded = None
        if decoded is None:
            raise _Invalid(_join("histograms", name), "an encoded HdrHistogram", encoded)


def _check_totals(participants: dict[str, Any]) -> None:
    """The outcomes add up to the participants scheduled, and the reasons to their outcome."""
    outcomes = participants["outcomes"]
    total = sum(outcomes[key] for key in ("completed", "left", "failed", "not_started"))
    if total != participants["scheduled"]:
        raise _Invalid(
            "participants.outcomes",
            f"outcomes that add up to participants.scheduled ({participants['scheduled']})",
            _Sum(total, "completed + left + failed + not_started"),
        )
    for reasons, outcome in (("failures", "failed"), ("left_reasons", "left")):
        total = sum(participants[reasons].values())
        if total != outcomes[outcome]:
            raise _Invalid(
                f"participants.{reasons}",
                f"counts that add up to participants.outcomes.{outcome} ({outcomes[outcome]})",
                _Sum(total, "their sum"),
            )


# -- one line about a bad value ----------------------------------------------------------------------


class _Missing:
    """A key that is not there."""


class _Sum:
    """A total that does not match, shown as ``what = total``."""

    def __init__(self, total: int, what: str) -> None:
        self.total = total
        self.what = what


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Required, NotRequired):
        return _describe(get_args(hint)[0])
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in get_args(hint))
    if origin is list:
        return "a list"
    if origin is dict or is_typeddict(hint):
        return "an object"
    named = {bool: "true or false", str: "a string", int: "a non-negative integer", float: "a finite number"}
    return named.get(hint, "a JSON value")


def _shown(value: Any) -> str:
    if isinstance(value, _Missing):
        return "nothing"
    if isinstance(value, _Sum):
        return f"{value.what} = {value.total}"
    if isinstance(value, _NonFinite):
        return value.name
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
