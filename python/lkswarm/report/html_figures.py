"""The plots of the HTML report, as plain plotly.js figure dicts (``{"data": [...], "layout": {...}}``).

Building the JSON directly keeps the report independent of plotly's Python figure machinery; the page
calls ``Plotly.newPlot`` on each. A figure that has nothing to show is None plus the reason, which the
page prints in its place.
"""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

from lkswarm.errors import ReportError
from lkswarm.metrics import nonzero_counts, value_at_percentile

NO_TIMELINE = "no timeline in this report (written by an lkswarm without timeline sampling)"
# Phases drawn on the latency distribution plot, when the report has samples of them.
DISTRIBUTION_PHASES = ("ws_connect", "join_response", "active")
# The classic HdrHistogram percentile plot: x = 1 / (1 - q) on a log axis, so the tail gets room.
_PERCENTILES = (0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 97, 98, 99, 99.5, 99.9, 99.95, 99.99, 99.999)
_TICKS = ((1, "0%"), (10, "90%"), (100, "99%"), (1000, "99.9%"), (10_000, "99.99%"), (100_000, "99.999%"))
_HEIGHT_PX = 360

Figure = dict[str, Any]
# (timeline series, legend label, extra trace attributes)
Traces = list[tuple[str, str, dict[str, Any]]]


def _layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title},
        "height": _HEIGHT_PX,
        "margin": {"l": 60, "r": 60, "t": 50, "b": 50},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
    }
    layout.update(extra)
    return layout


def _percentile_curve(histogram: HdrHistogram) -> tuple[list[float], list[float], list[str]]:
    """(x = 1/(1-q), latency ms, label) points up to the resolution the sample count supports, then the max."""
    count = histogram.get_total_count()
    x_limit = max(10.0, float(count))
    xs: list[float] = []
    ys: list[float] = []
    labels: list[str] = []
    counts = nonzero_counts(histogram)
    for percentile in _PERCENTILES:
        x = 1 / (1 - percentile / 100)
        if x > x_limit:
            break
        xs.append(round(x, 3))
        ys.append(value_at_percentile(histogram, percentile, counts) / 1000)
        labels.append(f"p{percentile:g}")
    xs.append(round(x_limit, 3))
    ys.append(histogram.get_max_value() / 1000)
    labels.append("max")
    return xs, ys, labels


def _summary_curve(stats: dict[str, Any]) -> tuple[list[float], list[float], list[str]]:
    """The same curve from a summary alone (reports without histograms): min, p50, p90, p99, p99.9, max."""
    points = ((1, "min"), (2, "p50"), (10, "p90"), (100, "p99"), (1000, "p999"))
    xs = [float(x) for x, _ in points] + [10_000.0]
    ys = [float(stats.get(key, 0.0)) for _, key in points] + [float(stats.get("max", 0.0))]
    return xs, ys, [key for _, key in points] + ["max"]


def latency_distribution(report: dict[str, Any]) -> tuple[Figure | None, str]:
    latency = report.get("latency_ms") or {}
    encoded = report.get("histograms") or {}
    data = []
    for phase in DISTRIBUTION_PHASES:
        stats = latency.get(phase) or {}
        if not stats.get("count"):
            continue
        if phase in encoded:
            try:
                histogram = HdrHistogram.decode(encoded[phase])
            except Exception as exc:  # hdrh raises bare exceptions of several kinds on bad input
                raise ReportError(f"histograms.{phase}: cannot decode histogram ({exc})") from None
            xs, ys, labels = _percentile_curve(histogram)
        else:
            xs, ys, labels = _summary_curve(stats)
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{phase} (n={stats['count']})",
                "x": xs,
                "y": ys,
                "customdata": labels,
                "hovertemplate": "%{customdata}: %{y:.2f} ms<extra>" + phase + "</extra>",
            }
        )
    if not data:
        return None, "no join latency samples in this report"
    ticks = {"tickvals": [x for x, _ in _TICKS], "ticktext": [label for _, label in _TICKS]}
    layout = _layout("Latency distribution (percentile)", "percentile", "latency (ms)", hovermode="closest")
    layout["xaxis"] = {"type": "log", "title": {"text": "percentile"}, **ticks}
    return {"data": data, "layout": layout}, ""


def _series(timeline: dict[str, Any], name: str, label: str, **extra: Any) -> dict[str, Any] | None:
    values = timeline.get(name)
    if not isinstance(values, list) or not values:
        return None
    trace = {"type": "scatter", "mode": "lines", "name": label, "x": timeline.get("t_s") or [], "y": values}
    trace.update(extra)
    return trace


def _timeline_figure(
    report: dict[str, Any], title: str, y_title: str, traces: Traces, **layout: Any
) -> tuple[Figure | None, str]:
    timeline = report.get("timeline")
    if not isinstance(timeline, dict) or not timeline.get("t_s"):
        return None, NO_TIMELINE
    data = [t for name, label, extra in traces if (t := _series(timeline, name, label, **extra)) is not None]
    if not data:
        return None, f"the timeline of this report has no {y_title} series"
    return {"data": data, "layout": _layout(title, "time since start (s)", y_title, **layout)}, ""


def join_latency_over_time(report: dict[str, Any]) -> tuple[Figure | None, str]:
    timeline = report.get("timeline")
    counts = timeline.get("join_count") if isinstance(timeline, dict) else None
    if isinstance(timeline, dict) and isinstance(counts, list):
        # An interval without joins has no latency (the timeline says 0): draw a gap, not a drop to zero.
        masked = dict(timeline)
        for name in ("join_p50_ms", "join_p99_ms"):
            values = masked.get(name) or []
            masked[name] = [v if i < len(counts) and counts[i] else None for i, v in enumerate(values)]
        report = {**report, "timeline": masked}
    # Markers too: with gaps, an interval of joins between two without is a lone point.
    dots = {"mode": "lines+markers", "marker": {"size": 5}}
    traces: Traces = [("join_p50_ms", "join p50", dots), ("join_p99_ms", "join p99", dots)]
    return _timeline_figure(report, "Join latency over time (per interval)", "latency (ms)", traces)


def participants_over_time(report: dict[str, Any]) -> tuple[Figure | None, str]:
    traces: Traces = [
        ("started", "started", {}),
        ("joined", "joined", {}),
        ("active", "active", {}),
        ("alive", "alive", {"line": {"dash": "dot"}}),
        ("failed", "failed", {"line": {"color": "#d62728"}}),
    ]
    return _timeline_figure(report, "Participants over time", "participants", traces)


def media_over_time(report: dict[str, Any]) -> tuple[Figure | None, str]:
    traces: Traces = [
        ("media_packets_per_s", "packets/s received", {}),
        ("media_loss_ratio", "loss ratio", {"yaxis": "y2", "line": {"color": "#d62728"}}),
    ]
    y2 = {"title": {"text": "loss ratio"}, "overlaying": "y", "side": "right", "rangemode": "tozero"}
    return _timeline_figure(report, "Media packets per second and loss", "packets/s", traces, yaxis2=y2)


_DATA_SERIES = ("data_sent_per_s", "data_received_per_s", "data_track_sent_per_s", "data_track_received_per_s")


def data_over_time(report: dict[str, Any]) -> tuple[Figure | None, str]:
    """Data messages and data-track frames per second, sent and received (the run's ``data_e2e`` and
    ``data_track_e2e`` latencies are in the data tables)."""
    timeline = report.get("timeline") or {}
    used = [name for name in _DATA_SERIES if any(timeline.get(name) or [])]
    if not used:
        return None, "no data messages or data-track frames in this run"
    names = {
        "data_sent_per_s": "messages/s sent",
        "data_received_per_s": "messages/s received",
        "data_track_sent_per_s": "data-track frames/s sent",
        "data_track_received_per_s": "data-track packets/s received",
    }
    traces: Traces = [(name, names[name], {}) for name in used]
    return _timeline_figure(report, "Data per second", "per second", traces)


def generator_over_time(report: dict[str, Any]) -> tuple[Figure | None, str]:
    traces: Traces = [
        ("cpu_percent", "CPU %", {}),
        ("loop_lag_p99_ms", "loop lag p99 (ms)", {"yaxis": "y2", "line": {"color": "#ff7f0e"}}),
    ]
    y2 = {"title": {"text": "loop lag (ms)"}, "overlaying": "y", "side": "right", "rangemode": "tozero"}
    return _timeline_figure(report, "Generator CPU and event-loop lag", "CPU %", traces, yaxis2=y2)


FIGURES = (
    ("join-distribution", latency_distribution),
    ("join-over-time", join_latency_over_time),
    ("participants-over-time", participants_over_time),
    ("media-over-time", media_over_time),
    ("generator-over-time", generator_over_time),
)


def build_figures(report: dict[str, Any]) -> list[tuple[str, Figure | None, str]]:
    """(element id, figure or None, why there is none) for every plot of the report, in page order."""
    figures = [(plot_id, *build(report)) for plot_id, build in FIGURES]
    if report.get("data"):  # only a run with data messages gets their plot
        figures.insert(len(figures) - 1, ("data-over-time", *data_over_time(report)))
    return figures
