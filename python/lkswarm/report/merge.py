"""Merges reports of runs made side by side (several generator processes or machines) into one report.

Counts add. Latency summaries are recomputed from the merged HdrHistograms, so merging is lossless for
every phase whose histogram the inputs carry; a summary without a histogram can only be bounded (its
percentiles become the worst input's) and the merged report says so in ``notes``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from hdrh.histogram import HdrHistogram

from lkswarm import __version__
from lkswarm.engine.record import MAX_FAILED_ROWS
from lkswarm.errors import ReportError
from lkswarm.metrics import new_histogram, summarize
from lkswarm.report.build import SCHEMA
from lkswarm.report.validate import check_schema  # it lived here; importing it from merge still works

# Timeline series of current or per-interval values (the rest are cumulative counts): a run that has ended
# contributes 0 to them. join_count counts the joins completed within each interval.
_CURRENT_SERIES = frozenset(
    {
        "active",
        "alive",
        "join_count",
        "media_packets_per_s",
        "data_sent_per_s",
        "data_received_per_s",
        "data_track_sent_per_s",
        "data_track_received_per_s",
        "cpu_percent",
        "rss_mb",
    }
)
# Per-interval figures that cannot be added; the merged value is the worst input's (an upper bound).
_MAX_SERIES = frozenset({"join_p50_ms", "join_p99_ms", "loop_lag_p99_ms"})
# Generator figures that are per process limits or peaks rather than totals.
_GENERATOR_MIN = frozenset({"fd_limit"})
_PERCENTILE_KEYS = ("p50", "p90", "p99", "p999")
_ROOM_PERCENTILES = ("join_p50_ms", "join_p99_ms")


def decode_histogram(encoded: str, where: str) -> HdrHistogram:
    try:
        histogram = HdrHistogram.decode(encoded)
    except Exception as exc:  # hdrh raises bare exceptions of several kinds on bad input
        raise ReportError(f"{where}: cannot decode histogram ({exc})") from None
    if histogram is None:
        raise ReportError(f"{where}: cannot decode histogram")
    return histogram


def _add_numbers(values: Iterable[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    total = sum(numbers)
    return round(total, 6) if isinstance(total, float) else total


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and "count" in value and "p50" in value


def _numbers(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def _merged_data(
    sections: list[Any], latency: dict[str, Any], track_latency: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Data sections: counts add; ratios are computed again from the sums, latency from the merged histograms
    (``data_e2e``; ``data_track_e2e`` for ``data.tracks``)."""
    merged: dict[str, Any] = _deep_add(sections) or {}
    for figures in [merged, *(merged.get("channels") or {}).values()]:
        expected = figures.get("messages_expected") or 0
        unique = (figures.get("messages_received") or 0) - (figures.get("duplicates") or 0)
        figures["delivery_ratio"] = round(min(1.0, unique / expected), 6) if expected else None
        figures["loss_ratio"] = round((figures.get("messages_missing") or 0) / expected, 6) if expected else None
    merged["latency_ms"] = latency
    merged["malformed_examples"] = (merged.get("malformed_examples") or [])[:5]
    tracks = merged.get("tracks")
    if isinstance(tracks, dict):
        expected = tracks.get("frames_expected") or 0
        unique = (tracks.get("frames_received") or 0) - (tracks.get("duplicates") or 0)
        tracks["delivery_ratio"] = round(min(1.0, unique / expected), 6) if expected else None
        tracks["loss_ratio"] = round((tracks.get("lost") or 0) / expected, 6) if expected else None
        tracks["latency_ms"] = track_latency or {}
        tracks["malformed_examples"] = (tracks.get("malformed_examples") or [])[:5]
    return merged


#: Booleans that say something went wrong in a part (``probes.saturated``): true in a merge if any part's is.
#: Every other boolean (``generator.valid``, ``passed``) is true only if every part's is.
FAULT_FLAGS = frozenset({"saturated"})


def _deep_add(items: list[Any], key: str = "") -> Any:
    """Numbers add, mappings merge key by key, lists concatenate, anything else keeps the first value.

    Figures that do not add go by their name: minima and maxima stay extremes, ratios take the worst
    input's (an upper bound), means the inputs' plain average, latency summaries are bounded, and a
    boolean is true only if every input's is, a fault flag (`FAULT_FLAGS`) if any input's is.
    """
    present = [item for item in items if item is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, bool):
        if key in FAULT_FLAGS:  # one saturated part makes the whole saturated
            return any(bool(item) for item in present)
        return all(bool(item) for item in present)  # valid, passed: every part must be
    if isinstance(first, int | float):
        numbers = _numbers(present)
        if key == "min" or key.startswith("min_") or key.endswith("_min"):
            return min(numbers)
        if key == "max" or key.startswith("max_") or key.endswith("_max") or key.endswith("ratio"):
            return max(numbers)
        if key == "mean" or key.endswith("_fps") or "_per_" in key:
            return round(sum(numbers) / len(numbers), 6)
        return _add_numbers(present)
    if _is_summary(first):
        return _bound_summaries([item for item in present if _is_summary(item)])
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for item in present if isinstance(item, dict) for k in item))
        return {k: _deep_add([item.get(k) for item in present if isinstance(item, dict)], k) for k in keys}
    if isinstance(first, list):
        return [element for item in present if isinstance(item, list) for element in item]
    return copy.deepcopy(first)


def _bound_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Combines summaries without their histograms: exact count/min/max/mean, percentiles bounded above."""
    filled = [s for s in summaries if s.get("count")]
    if not filled:
        return summarize(new_histogram())
    count = sum(int(s["count"]) for s in filled)
    merged: dict[str, Any] = {
        "count": count,
        "min": min(float(s.get("min", 0.0)) for s in filled),
        "max": max(float(s.get("max", 0.0)) for s in filled),
        "mean": round(sum(float(s.get("mean", 0.0)) * int(s["count"]) for s in filled) / count, 3),
    }
    for key in _PERCENTILE_KEYS:
        merged[key] = max(float(s.get(key, 0.0)) for s in filled)
    return {key: merged[key] for key in ("count", "min", "p50", "p90", "p99", "p999", "max", "mean")}


class _Merger:
    def __init__(self, reports: list[dict[str, Any]]) -> None:
        self.reports = reports
        self.notes: list[str] = []
        self.histograms: dict[str, str] = {}

    def summary(self, name: str, summaries: list[dict[str, Any] | None], label: str) -> dict[str, Any]:
        """The merged summary of histogram ``name`` (report key ``label``); exact when every input carries it."""
        filled = [
            (i, r, s) for i, (r, s) in enumerate(zip(self.reports, summaries, strict=True)) if s and s.get("count")
        ]
        if not filled:
            return summarize(new_histogram())
        if all(name in (r.get("histograms") or {}) for _, r, _ in filled):
            merged = new_histogram()
            for i, r, _ in filled:
                merged.add(decode_histogram(r["histograms"][name], f"report {i + 1} histograms.{name}"))
            self.histograms[name] = merged.encode().decode("ascii")
            return summarize(merged)
        self.notes.append(
            f"{label}: not every input carries its histogram; merged percentiles are the worst input's (upper bounds)"
        )
        return _bound_summaries([s for _, _, s in filled])

    def latency(self) -> dict[str, Any]:
        phases = list(dict.fromkeys(p for r in self.reports for p in (r.get("latency_ms") or {})))
        return {
            p: self.summary(p, [(r.get("latency_ms") or {}).get(p) for r in self.reports], f"latency_ms.{p}")
            for p in phases
        }

    def media(self) -> dict[str, Any]:
        media_list = [r.get("media") or {} for r in self.reports]
        merged = {
            key: _deep_add([m.get(key) for m in media_list])
            for key in dict.fromkeys(k for m in media_list for k in m)
            if key not in ("loss_ratio", "jitter_ms", "track_subscribed_ms")
        }
        hub = merged.get("hub")
        if isinstance(hub, dict) and hub.get("datagrams_received"):
            # The workers' sums divided, not the average of their ratios (which weighs a worker that read
            # ten datagrams as one that read a million). Older reports carry no count: their average stays.
            hub["syscalls_per_datagram"] = round(hub.get("syscalls", 0) / hub["datagrams_received"], 4)
        expected = merged.get("packets_expected") or 0
        merged["loss_ratio"] = round((merged.get("packets_lost") or 0) / expected, 6) if expected else None
        # Exact when every input carries its "jitter" histogram (older reports carried none).
        merged["jitter_ms"] = self.summary("jitter", [m.get("jitter_ms") for m in media_list], "media.jitter_ms")
        by_kind = [m.get("track_subscribed_ms") or {} for m in media_list]
        merged["track_subscribed_ms"] = {
            kind: self.summary(
                f"track_subscribed.{kind}", [k.get(kind) for k in by_kind], f"media.track_subscribed_ms.{kind}"
            )
            for kind in sorted({kind for k in by_kind for kind in k})
        }
        return merged

    def generator(self) -> dict[str, Any]:
        gens = [r.get("generator") or {} for r in self.reports]
        merged: dict[str, Any] = {}
        for key in dict.fromkeys(k for g in gens for k in g):
            values = [g.get(key) for g in gens if key in g]
            if key == "loop_lag_ms":
                merged[key] = self.summary("loop_lag", [g.get(key) for g in gens], "generator.loop_lag_ms")
            elif key == "media_lag_ms":
                merged[key] = self.summary("media_lag", [g.get(key) for g in gens], "generator.media_lag_ms")
            elif key == "lateness_ms":
                merged[key] = self.summary("lateness", [g.get(key) for g in gens], "generator.lateness_ms")
            elif key == "valid":
                merged[key] = all(bool(v) for v in values)
            elif key in _GENERATOR_MIN:
                merged[key] = min(v for v in values if isinstance(v, int | float))
            else:  # cpu_s, memory (max_rss_mb too), late_starts: totals over the generator processes
                merged[key] = _add_numbers(values) if _numbers(values) else _deep_add(values, key)
        return merged

    def rooms(self) -> list[dict[str, Any]]:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for report in self.reports:
            for room in report.get("rooms") or []:
                by_name.setdefault(str(room.get("room")), []).append(room)
        merged = []
        for name, rows in by_name.items():
            row: dict[str, Any] = {"room": name}
            for key in dict.fromkeys(k for r in rows for k in r if k != "room"):
                values = [r.get(key) for r in rows]
                if key in _ROOM_PERCENTILES:
                    row[key] = max(v for v in values if isinstance(v, int | float))  # a key present has a number
                else:
                    row[key] = _deep_add(values)
            merged.append(row)
        if any(len(rows) > 1 for rows in by_name.values()):
            self.notes.append("rooms present in several inputs: their join percentiles are the worst input's")
        return merged

    def timeline(self) -> dict[str, Any] | None:
        timelines = [r["timeline"] for r in self.reports if isinstance(r.get("timeline"), dict)]
        if not timelines:
            return None
        ran = [r for r in self.reports if r.get("duration_s")]  # a crashed share's stand-in (0 s) has no timeline
        if len(timelines) < len(ran):
            self.notes.append("timeline: some inputs have none; the merged timeline covers the others only")
        intervals = {t.get("interval_s") for t in timelines}
        if len(intervals) > 1:
            raise ReportError(f"cannot merge timelines of different intervals: {sorted(map(str, intervals))} s")
        # Runs started together (one per process) line up sample by sample: each sampler wakes every
        # interval_s from its own start, so the i-th samples cover the same interval (their t_s differ by
        # scheduling jitter only, which is why t_s values are not matched exactly). t_s is the longest run's.
        t_s = list(max((tl.get("t_s") or [] for tl in timelines), key=len))
        series = list(dict.fromkeys(k for tl in timelines for k, v in tl.items() if isinstance(v, list) and k != "t_s"))
        merged: dict[str, Any] = {"interval_s": intervals.pop(), "t_s": t_s}
        rates = [self._align(tl, "media_packets_per_s", len(t_s), False) for tl in timelines]
        for name in series:
            cumulative = name not in _CURRENT_SERIES and name not in _MAX_SERIES and name != "media_loss_ratio"
            columns = [self._align(tl, name, len(t_s), cumulative) for tl in timelines]
            merged[name] = self._combine(name, columns, rates)
        return merged

    @staticmethod
    def _align(timeline: dict[str, Any], name: str, length: int, cumulative: bool) -> list[Any]:
        """``timeline``'s series ``name`` over ``length`` samples (None where it has no value)."""
        own = len(timeline.get("t_s") or [])
        values = list(timeline.get(name) or [])[:own]
        values += [None] * (own - len(values))
        # A cumulative count keeps its last value after its run ended; a current value is gone.
        last = next((v for v in reversed(values) if v is not None), None) if cumulative else None
        return values + [last] * (length - own)

    def _combine(self, name: str, columns: list[list[Any]], rates: list[list[Any]]) -> list[Any]:
        """Merges one series: sums, except maxima for percentiles and a rate-weighted mean for loss."""
        merged: list[Any] = []
        for j, values in enumerate(zip(*columns, strict=True)):
            present = [v for v in values if isinstance(v, int | float)]
            if not present:
                merged.append(None)
            elif name in _MAX_SERIES:
                merged.append(max(present))
            elif name == "media_loss_ratio":
                # Weighted by each input's packet rate: the share of the merged packets that were lost.
                pairs = [(float(v), float(r[j] or 0)) for v, r in zip(values, rates, strict=True) if v is not None]
                weight = sum(rate for _, rate in pairs)
                merged.append(round(sum(v * rate for v, rate in pairs) / weight, 6) if weight else max(present))
            elif all(isinstance(v, int) for v in present):
                merged.append(sum(present))
            else:
                merged.append(round(sum(present), 3))
        return merged


def _duration_s(reports: list[dict[str, Any]]) -> tuple[str, float]:
    """Earliest start and the span from it to the last end; falls back to the longest run on bad timestamps."""
    longest = max(float(r.get("duration_s") or 0.0) for r in reports)
    try:
        starts = [datetime.fromisoformat(str(r["started_at"])) for r in reports]
        first = min(starts)
        end = max(
            (s - first).total_seconds() + float(r.get("duration_s") or 0.0)
            for s, r in zip(starts, reports, strict=True)
        )
    except (KeyError, TypeError, ValueError):
        return str(reports[0].get("started_at", "")), longest
    return first.isoformat(), round(max(end, longest), 3)


def apart_note(reports: list[dict[str, Any]]) -> str | None:
    """A note when the inputs did not run side by side: some run ended before another started, so the merged
    rates and timeline spread over time that no one load covered (None where every pair overlapped, or the
    timestamps are unreadable)."""
    try:
        spans = sorted(
            (start, start + float(r.get("duration_s") or 0.0))
            for r in reports
            if float(r.get("duration_s") or 0.0) > 0  # a crashed or unstarted share's stand-in never ran
            for start in [datetime.fromisoformat(str(r["started_at"])).timestamp()]
        )
    except (KeyError, TypeError, ValueError):
        return None
    gaps = [later[0] - earlier_end for earlier_end, later in zip(_running_ends(spans), spans[1:], strict=False)]
    widest = max(gaps, default=0.0)
    if widest <= 0:
        return None
    return (
        f"the inputs did not run side by side: one started {widest:.1f} s after the others had ended, so the "
        "merged duration, rates and timeline span loads that never ran together; merge runs made at the same time"
    )


def _running_ends(spans: list[tuple[float, float]]) -> list[float]:
    """For spans sorted by start, the latest end among each span and those before it."""
    ends, latest = [], float("-inf")
    for _, end in spans:
        latest = max(latest, end)
        ends.append(latest)
    return ends


def _union(lists: Iterable[Iterable[str]]) -> list[str]:
    return list(dict.fromkeys(item for items in lists for item in items))


def find_duplicate(reports: list[dict[str, Any]]) -> tuple[int, int, str] | None:
    """The first pair ``(i, j)``, i < j, of ``reports`` that hold the same run, and how it shows; None if none do.

    Merging a run twice doubles its counts. The same run shows as the same content (whatever the key order
    or whitespace on disk); as the same start, config (its ``run_tag`` is random per run) and rooms (the
    workers of one ``--workers`` run share the first two, not their rooms); or, for a report that is itself
    a merge, as an input named in its ``merged_from`` (by start, duration, version and target).
    """
    digests: dict[str, int] = {}
    runs: dict[str, int] = {}  # a plain report's run -> its index
    plain: dict[str, int] = {}  # a plain report's entry as merged_from would name it -> its index
    merged: dict[str, int] = {}  # an entry of a merged report's merged_from -> that report's index
    for j, report in enumerate(reports):
        digest = _digest(report)
        if digest in digests:
            return digests[digest], j, "identical content"
        digests[digest] = j
        merged_from = report.get("merged_from")
        if isinstance(merged_from, list):
            entries = {_digest(_entry(row)) for row in merged_from if isinstance(row, dict)}
            earlier = [i for entry in entries for i in (plain.get(entry), merged.get(entry)) if i is not None]
            if earlier:
                return min(earlier), j, "one already merges the other's run"
            merged.update(dict.fromkeys(entries, j))
            continue
        run = _digest([report.get("started_at"), report.get("config"), sorted(_room_names(report))])
        if run in runs:
            return runs[run], j, "the same run: the same started_at, config and rooms"
        entry = _digest(_entry(report))
        if entry in merged:
            return merged[entry], j, "one already merges the other's run"
        runs[run] = j
        plain[entry] = j
    return None


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _entry(report: dict[str, Any]) -> list[Any]:
    """What ``merged_from`` keeps of a run to tell it again: start, duration, version, target URL."""
    target = report.get("target")
    url = target.get("url") if isinstance(target, dict) else None
    return [report.get("started_at"), report.get("duration_s"), report.get("version"), url]


def _room_names(report: dict[str, Any]) -> list[str]:
    rooms = report.get("rooms")
    return [str(row.get("room")) for row in rooms if isinstance(row, dict)] if isinstance(rooms, list) else []


def merge_reports(reports: list[dict[str, Any]], *, one_run: bool = False) -> dict[str, Any]:
    """One report of the union of ``reports`` (schema lkswarm.report/1), with ``merged_from`` naming the inputs.

    ``one_run``: the shares of one ``--workers`` or ``--ray`` run, whose caller sets the run's own ``config``
    (a worker's copy names the server it was given, the parent's may not): no note that their configs differ."""
    if not reports:
        raise ReportError("nothing to merge: give at least one report")
    for i, report in enumerate(reports):
        check_schema(report, f"report {i + 1}")
    merger = _Merger(reports)
    started_at, duration_s = _duration_s(reports)
    configs = [r.get("config") for r in reports]
    if not one_run and any(
        {k: v for k, v in (c or {}).items() if k != "run_tag"}
        != {k: v for k, v in (configs[0] or {}).items() if k != "run_tag"}
        for c in configs
    ):
        merger.notes.append("inputs ran different configurations; `config` is the first input's")
    if (apart := apart_note(reports)) is not None:
        merger.notes.append(apart)
    participants = [r.get("participants") or {} for r in reports]
    merged_participants = {
        key: _deep_add([p.get(key) for p in participants]) for key in _union(p.keys() for p in participants)
    }
    # One detail per failure reason: the first input's wins, as within a run.
    details: dict[str, Any] = {}
    for p in participants:
        for reason, detail in (p.get("failure_details") or {}).items():
            details.setdefault(reason, detail)
    merged_participants["failure_details"] = details
    targets = [r.get("target") or {} for r in reports]
    urls = _union([[str(t["url"])] for t in targets if t.get("url")])
    merged: dict[str, Any] = {
        "schema": SCHEMA,
        "version": __version__,
        "config": copy.deepcopy(configs[0] or {}),
        "started_at": started_at,
        "duration_s": duration_s,
        "participants": merged_participants,
        "latency_ms": merger.latency(),
        "media": merger.media(),
        "probes": _deep_add([r.get("probes") for r in reports], "probes") or {},
        "signal": _deep_add([r.get("signal") for r in reports]) or {},
        "room_check": _deep_add([r.get("room_check") for r in reports]) or {},
        "generator": merger.generator(),
    }
    timeline = merger.timeline()
    if timeline is not None:
        merged["timeline"] = timeline
    if any("rooms" in r for r in reports):
        merged["rooms"] = merger.rooms()
    if any(r.get("data") for r in reports):
        latency_ms = merged["latency_ms"]
        merged["data"] = _merged_data(
            [r.get("data") for r in reports], latency_ms.get("data_e2e") or {}, latency_ms.get("data_track_e2e") or {}
        )
    if any("failed_participants" in r for r in reports):
        rows = [row for r in reports for row in r.get("failed_participants") or []]
        if len(rows) > MAX_FAILED_ROWS:  # each input lists up to that many; so does the whole, earliest first
            rows = sorted(rows, key=lambda row: row.get("at_s") or 0.0)[:MAX_FAILED_ROWS]
            merger.notes.append(
                f"failed_participants lists the {MAX_FAILED_ROWS} earliest failures of the inputs' lists; "
                "participants.failures counts them all"
            )
        merged["failed_participants"] = rows
    if sum(1 for r in reports if r.get("probes")) > 1:
        merger.notes.append("probes: counts add; ratios and latency percentiles are the worst input's, means averaged")
    # A threshold verdict belongs to one run's figures; evaluate thresholds again on the merged report.
    failed_inputs = sum(1 for r in reports if not r.get("passed", True))
    if failed_inputs:
        merger.notes.append(f"{failed_inputs} input(s) failed their own thresholds; merge does not re-evaluate them")
    merged["warnings"] = _union(r.get("warnings") or [] for r in reports)
    merged["notes"] = _union([*(r.get("notes") or [] for r in reports), merger.notes])
    merged["histograms"] = merger.histograms
    merged["thresholds"] = []
    merged["passed"] = True
    merged["target"] = {
        "url": urls[0] if len(urls) == 1 else "",
        "embedded_server": any(bool(t.get("embedded_server")) for t in targets),
    }
    if len(urls) > 1:  # runs against several servers (each embedded server has its own port)
        merged["target"]["urls"] = urls
    merged["merged_from"] = [
        {
            "started_at": r.get("started_at"),
            "duration_s": r.get("duration_s"),
            "version": r.get("version"),
            "target": r.get("target"),
            "passed": r.get("passed", True),
        }
        for r in reports
    ]
    return merged
