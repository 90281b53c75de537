"""The plots of a capacity search (issue 20; notes/capacity.md §4.6) as plotly.js figure dicts.

Built like `html_figures`: plain ``{"data", "layout"}`` dicts, and None plus the reason when a report lacks
what a plot needs (no server metrics, no fit), which the page prints in the plot's place. Every x in time
is seconds since the search started, as the section's ramp/settle/hold windows are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

from lkswarm.capacity.schema import CapacitySection, Fit, Level
from lkswarm.report.capacity_text import capacity_level, format_slo_value, is_ratio_key
from lkswarm.report.html_figures import Figure, _layout

VERDICT_COLOURS = {
    "PASS": "#2ca02c",
    "FAIL": "#d62728",
    "INCONCLUSIVE": "#ff7f0e",
    "GENERATOR_BOUND": "#9467bd",
    "ABORTED": "#7f7f7f",
}
NO_CAPACITY = "this report has no capacity section"
NO_LEVELS = "the capacity search measured no level"
STAIRCASE = "Capacity search: load over time (settle and hold shaded)"
LATENCY = "Latency against load, with the SLO limits and the knee"
CORES = "Server cores against egress packets/s, with the fit and its prediction band"
DELIVERED = "Delivered against expected media packets/s per level"
GIVES_WAY = "What gives way first: use of each limit at the capacity"
_GRID_POINTS = 40
Result = tuple[Figure | None, str]


def _section(report: dict[str, Any]) -> CapacitySection | None:
    section = report.get("capacity")
    return cast(CapacitySection, section) if isinstance(section, dict) else None


def _ok_fit(section: CapacitySection, name: str, *keys: str) -> dict[str, float] | None:
    """A fit's coefficients when the search trusted it and they hold ``keys``; else None (nothing drawn)."""
    fit: Fit | None = section["model"].get(name)
    coefficients = (fit.get("coefficients") or {}) if fit and fit.get("ok") else {}
    return coefficients if coefficients and all(k in coefficients for k in keys) else None


def _grid(low: float, high: float) -> list[float]:
    step = (high - low) / (_GRID_POINTS - 1)
    return [low + i * step for i in range(_GRID_POINTS)]


def _vertical(x: float, text: str, colour: str = "#555") -> tuple[dict[str, Any], dict[str, Any]]:
    shape = {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": {"color": colour, "dash": "dot"},
    }
    note = {"xref": "x", "yref": "paper", "x": x, "y": 1, "text": text, "showarrow": False, "yanchor": "bottom"}
    return shape, note


def _marks(*pairs: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Layout keys for (shape, annotation) pairs: the lines drawn over a plot and their labels."""
    return {"shapes": [shape for shape, _ in pairs], "annotations": [note for _, note in pairs]}


def _horizontal(y: float, text: str, colour: str = "#d62728") -> tuple[dict[str, Any], dict[str, Any]]:
    shape = {
        "type": "line",
        "xref": "paper",
        "yref": "y",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"color": colour, "dash": "dash"},
    }
    note = {
        "xref": "paper",
        "yref": "y",
        "x": 1,
        "y": y,
        "text": text,
        "showarrow": False,
        "xanchor": "right",
        "yanchor": "bottom",
        "font": {"color": colour},
    }
    return shape, note


# --- (a) the staircase ---------------------------------------------------------------------------------


def _population_trace(levels: list[Level]) -> dict[str, Any]:
    """Each level's planned population: its ramp (from zero after a teardown), then flat to the end of its hold."""
    xs: list[float | None] = []
    ys: list[int | None] = []
    previous = 0
    for level in levels:
        start = 0 if level["fresh"] else previous
        xs += [level["ramp_s"][0], level["ramp_s"][1], level["hold_s"][1], None]
        ys += [start, level["participants"], level["participants"], None]
        previous = level["participants"]
    return {"type": "scatter", "mode": "lines", "name": "level population", "x": xs, "y": ys, "line": {"width": 3}}


def _window(x0: float, x1: float, colour: str) -> dict[str, Any]:
    return {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": x0,
        "x1": x1,
        "y0": 0,
        "y1": 1,
        "fillcolor": colour,
        "opacity": 0.15,
        "line": {"width": 0},
        "layer": "below",
    }


def _measured_traces(report: dict[str, Any], section: CapacitySection) -> list[dict[str, Any]]:
    """alive/active from the run's timeline, moved onto the search's clock.

    The timeline counts from the run's start; ``search.timeline_offset_s`` (when the search records it) is
    the timeline time at which the search started. Without it the two clocks are taken to agree.
    """
    timeline = report.get("timeline")
    if not isinstance(timeline, dict) or not timeline.get("t_s"):
        return []
    offset = section["search"].get("timeline_offset_s")
    shift = float(offset) if isinstance(offset, int | float) else 0.0
    xs = [t - shift for t in timeline["t_s"]]
    traces = []
    for name, style in (("alive", {"dash": "dot"}), ("active", {})):
        values = timeline.get(name)
        if isinstance(values, list) and values:
            traces.append(
                {"type": "scatter", "mode": "lines", "name": f"{name} (measured)", "x": xs, "y": values, "line": style}
            )
    return traces


def staircase(report: dict[str, Any]) -> Result:
    section = _section(report)
    if section is None:
        return None, NO_CAPACITY
    levels = section["levels"]
    if not levels:
        return None, NO_LEVELS
    shapes, notes = [], []
    for level in levels:
        colour = VERDICT_COLOURS.get(level["verdict"], "#7f7f7f")
        shapes += [_window(*level["settle_s"], "#9aa0a6"), _window(*level["hold_s"], colour)]
        notes.append(
            {
                "x": (level["hold_s"][0] + level["hold_s"][1]) / 2,
                "y": level["participants"],
                "yshift": 12,
                "text": level["verdict"],
                "showarrow": False,
                "font": {"color": colour, "size": 11},
            }
        )
    data = [_population_trace(levels), *_measured_traces(report, section)]
    layout = _layout(STAIRCASE, "time since the search started (s)", "participants", shapes=shapes, annotations=notes)
    return {"data": data, "layout": layout}, ""


# --- (b) latency against load --------------------------------------------------------------------------


def _by_load(section: CapacitySection) -> list[Level]:
    return sorted(section["levels"], key=lambda level: (level["participants"], level["index"]))


def _level_points(name: str, values: list[tuple[Level, float]]) -> dict[str, Any]:
    """Markers coloured by the level's verdict, joined in order of load; hover names the level."""
    return {
        "type": "scatter",
        "mode": "lines+markers",
        "name": name,
        "x": [level["participants"] for level, _ in values],
        "y": [value for _, value in values],
        "text": [f"level {level['index']} ({level['phase']}): {level['verdict']}" for level, _ in values],
        "marker": {"size": 9, "color": [VERDICT_COLOURS.get(level["verdict"], "#7f7f7f") for level, _ in values]},
        "hovertemplate": "%{x} participants: %{y:.1f}<br>%{text}<extra>" + name + "</extra>",
    }


def latency_vs_load(report: dict[str, Any]) -> Result:
    section = _section(report)
    if section is None:
        return None, NO_CAPACITY
    levels = _by_load(section)
    join = [(lv, lv["client"]["join_response"]["p95"]) for lv in levels if lv["client"]["join_response"]["count"]]
    ping = [(lv, lv["client"]["ping_rtt"]["p99"]) for lv in levels if lv["client"]["ping_rtt"]["count"]]
    data = [_level_points(name, v) for name, v in (("join p95 (ms)", join), ("ping p99 (ms)", ping)) if v]
    if not data:
        return None, "no join or ping latency samples in the capacity levels"
    pairs = [
        _horizontal(spec["limit"], spec["text"] or spec["key"])
        for spec in section["slos"]
        if not is_ratio_key(spec["key"]) and spec["key"].startswith(("join_response", "ping_rtt"))
    ]
    knee = _ok_fit(section, "knee_latency", "x")
    if knee is not None:
        pairs.append(_vertical(knee["x"], f"knee ≈ {knee['x']:,.0f}"))
    layout = _layout(LATENCY, "participants", "latency (ms)", hovermode="closest", **_marks(*pairs))
    return {"data": data, "layout": layout}, ""


# --- (c) server cores against egress -------------------------------------------------------------------


def _band(c: dict[str, float], grid: list[float], confidence: float) -> list[dict[str, Any]]:
    """The OLS prediction band ŷ ± t·s·√(1 + 1/n + (x - x̄)²/Sxx), when the fit gives its statistics."""
    if not all(k in c for k in ("s", "t", "x_mean", "sxx", "n")) or c["sxx"] <= 0 or c["n"] <= 0:
        return []
    fit = [c["intercept"] + c["slope"] * x for x in grid]
    half = [c["t"] * c["s"] * math.sqrt(1 + 1 / c["n"] + (x - c["x_mean"]) ** 2 / c["sxx"]) for x in grid]
    style = {"type": "scatter", "mode": "lines", "x": grid, "line": {"width": 0}, "hoverinfo": "skip"}
    # plotly fills between a trace and the one before it: the lower edge first, then the upper with the fill.
    lower = {**style, "y": [y - h for y, h in zip(fit, half, strict=True)], "showlegend": False}
    upper = {
        **style,
        "y": [y + h for y, h in zip(fit, half, strict=True)],
        "fill": "tonexty",
        "fillcolor": "rgba(31,119,180,0.15)",
        "name": f"{confidence:.0%} prediction band",
    }
    return [lower, upper]


def _fit_traces(section: CapacitySection, x_max: float) -> list[dict[str, Any]]:
    c = _ok_fit(section, "cores_vs_egress", "intercept", "slope")
    if c is None:
        return []
    grid = _grid(0.0, x_max * 1.1)
    r2 = section["model"]["cores_vs_egress"].get("r2")
    name = "OLS fit" + (f" (R² {r2:.3f})" if r2 is not None else "")
    line = {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": grid,
        "y": [c["intercept"] + c["slope"] * x for x in grid],
        "line": {"color": "#1f77b4"},
    }
    return [*_band(c, grid, section["confidence"]), line]


def cores_vs_egress(report: dict[str, Any]) -> Result:
    section = _section(report)
    if section is None:
        return None, NO_CAPACITY
    points = [
        (lv, lv["server"]["packets_out_per_s"], lv["server"]["cores"])
        for lv in _by_load(section)
        if lv["server"] is not None
        and lv["server"]["packets_out_per_s"] is not None
        and lv["server"]["cores"] is not None
    ]
    if not points:
        return None, "no server CPU and egress figures: the server's metrics were not read"
    measured = _level_points("server cores", [(lv, cores) for lv, _, cores in points])
    measured.update(mode="markers", x=[x for _, x, _ in points])
    measured["hovertemplate"] = "%{x:.0f} packets/s: %{y:.2f} cores<br>%{text}<extra></extra>"
    cpus = section["server_limit"].get("cpus")
    limit = [_horizontal(float(cpus), f"--server-cpus {cpus:g}")] if isinstance(cpus, int | float) and cpus > 0 else []
    data = [*_fit_traces(section, max(x for _, x, _ in points)), measured]
    layout = _layout(CORES, "server egress packets/s", "server cores", hovermode="closest", **_marks(*limit))
    return {"data": data, "layout": layout}, ""


# --- (d) delivered against expected --------------------------------------------------------------------


def _usl(c: dict[str, float], n: float) -> float:
    """The Universal Scalability Law: X(N) = lambda·N / (1 + sigma·(N - 1) + kappa·N·(N - 1))."""
    return c["lambda"] * n / (1 + c["sigma"] * (n - 1) + c["kappa"] * n * (n - 1))


def _usl_parts(section: CapacitySection, rates: list[tuple[Level, float, float]]) -> tuple[list[Any], list[Any]]:
    """(traces, marks) of the USL curve and its peak N*, when the search trusted the fit.

    N is participants unless the fit says its x is the expected packet rate; then it is evaluated at each level.
    """
    c = _ok_fit(section, "usl", "lambda", "sigma", "kappa")
    if c is None:
        return [], []
    x_text = str(section["model"]["usl"].get("x", ""))
    style = {"type": "scatter", "mode": "lines", "name": "USL fit", "line": {"color": "#9467bd", "dash": "dash"}}
    if "packet" in x_text or "expected" in x_text:
        at_levels = {"x": [lv["participants"] for lv, _, _ in rates], "y": [_usl(c, e) for _, e, _ in rates]}
        return [{**style, **at_levels}], []
    grid = _grid(1.0, max(lv["participants"] for lv, _, _ in rates) * 1.2)
    curve = [{**style, "x": grid, "y": [_usl(c, n) for n in grid]}]
    if c["kappa"] > 0 and c["sigma"] < 1:  # the peak of the curve: past it, more load delivers less
        return curve, [_vertical(math.sqrt((1 - c["sigma"]) / c["kappa"]), "N* (USL peak)", "#9467bd")]
    return curve, []


def delivered_vs_expected(report: dict[str, Any]) -> Result:
    section = _section(report)
    if section is None:
        return None, NO_CAPACITY
    rates = []
    for lv in _by_load(section):
        seconds = lv["hold_s"][1] - lv["hold_s"][0]
        if seconds > 0 and lv["client"]["packets_expected"] > 0:
            rates.append((lv, lv["client"]["packets_expected"] / seconds, lv["client"]["packets_received"] / seconds))
    if not rates:
        return None, "no media packets were expected in the capacity levels' holds"
    expected = _level_points("expected packets/s", [(lv, e) for lv, e, _ in rates])
    expected.update(mode="lines", line={"dash": "dot", "color": "#7f7f7f"})
    delivered = _level_points("delivered packets/s", [(lv, d) for lv, _, d in rates])
    usl, marks = _usl_parts(section, rates)
    layout = _layout(
        DELIVERED, "participants", "media packets/s (clients, hold)", hovermode="closest", **_marks(*marks)
    )
    return {"data": [expected, delivered, *usl], "layout": layout}, ""


# --- (f) what gives way first --------------------------------------------------------------------------


def _utilisation(section: CapacitySection, level: Level) -> list[tuple[str, float, str]]:
    """(what, observed / limit, observed of limit in words) for each SLO and the server's CPU limit."""
    bars = []
    for key, result in level["slos"].items():
        if result["observed"] is not None and result["limit"] > 0:
            words = f"{format_slo_value(key, result['observed'])} of {format_slo_value(key, result['limit'])}"
            bars.append((key, result["observed"] / result["limit"], words))
    cpus = section["server_limit"].get("cpus")
    cores = level["server"]["cores"] if level["server"] is not None else None
    if cores is not None and isinstance(cpus, int | float) and cpus > 0:
        bars.append(("server cores", cores / cpus, f"{cores:.2g} of {cpus:g} cores"))
    return sorted(bars, key=lambda bar: bar[1])


def gives_way_first(report: dict[str, Any]) -> Result:
    section = _section(report)
    if section is None:
        return None, NO_CAPACITY
    level = capacity_level(section)
    if level is None:
        return None, "no level passed: there is no capacity level to compare with the limits"
    bars = _utilisation(section, level)
    if not bars:
        return None, "the capacity level has no observed SLO values"
    limiting = section.get("limiting")
    # The limiting SLO is highlighted; where the limit was a guard (no bar), the bar nearest its limit is.
    highlight = limiting if any(name == limiting for name, _, _ in bars) else bars[-1][0]
    colours = ["#d62728" if name == highlight else "#1f77b4" for name, _, _ in bars]
    trace = {
        "type": "bar",
        "orientation": "h",
        "y": [name for name, _, _ in bars],
        "x": [u for _, u, _ in bars],
        "text": [words for _, _, words in bars],
        "marker": {"color": colours},
        "name": "use of the limit",
        "hovertemplate": "%{y}: %{x:.0%} (%{text})<extra></extra>",
    }
    title = f"{GIVES_WAY} ({level['participants']:,} participants)"
    layout = _layout(title, "observed / limit", "", hovermode="closest", **_marks(_vertical(1.0, "limit")))
    layout["xaxis"]["tickformat"] = ".0%"
    layout["yaxis"] = {"automargin": True}
    return {"data": [trace], "layout": layout}, ""


CAPACITY_FIGURES: tuple[tuple[str, str, Callable[[dict[str, Any]], Result]], ...] = (
    ("capacity-staircase", STAIRCASE, staircase),
    ("capacity-latency", LATENCY, latency_vs_load),
    ("capacity-cores", CORES, cores_vs_egress),
    ("capacity-delivered", DELIVERED, delivered_vs_expected),
    ("capacity-gives-way", GIVES_WAY, gives_way_first),
)


def capacity_plots(report: dict[str, Any]) -> list[tuple[str, Figure | None, str]]:
    """(element id, figure or None, why there is none) per capacity plot; empty without a capacity section."""
    if _section(report) is None:
        return []
    return [(plot_id, *build(report)) for plot_id, _, build in CAPACITY_FIGURES]


def capacity_figures(report: dict[str, Any]) -> list[tuple[str, Figure | None, str]]:
    """(title, figure or None, why there is none) per capacity plot; empty without a capacity section."""
    if _section(report) is None:
        return []
    return [(title, *build(report)) for _, title, build in CAPACITY_FIGURES]
