"""The report as one self-contained HTML page: summary tables, thresholds and plotly plots, offline.

plotly.js is inlined (no script loads from the network), every string from the report is escaped, and
the figure JSON is embedded so that no report value can close the script element.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from lkswarm.auth import safe_url
from lkswarm.capacity.schema import CapacitySection
from lkswarm.report.capacity_figures import capacity_plots
from lkswarm.report.capacity_text import levels_table, summary_paragraph
from lkswarm.report.csv_tables import SIGNAL_PATH_FIELDS, signal_path_rows
from lkswarm.report.html_figures import Figure, build_figures

_MAX_FAILED_ROWS = 500
_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       padding: 0 16px; color: #1d2330; }
h1 { margin: 0 0 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #d8dce4; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 10px; border-bottom: 1px solid #eceef2; }
th { text-align: left; background: #f4f5f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: 600; margin-right: 6px; }
.ok { background: #dff3e4; color: #135d2a; } .bad { background: #fbe0e0; color: #8a1c1c; }
.neutral { background: #eceef2; color: #374151; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 6px 0; }
.note { background: #eef3fb; border-left: 4px solid #6b8fd6; padding: 6px 10px; margin: 6px 0; }
.plot { min-height: 360px; margin: 12px 0; } .missing { color: #6b7280; font-style: italic; padding: 12px 0; }
.muted { color: #6b7280; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


class Raw(str):
    """Markup built here from escaped parts: a table cell that is not escaped again."""

    __slots__ = ()


def _number(value: float) -> str:
    if value and abs(value) < 0.01:
        return f"{value:.3g}"  # loss ratios: keep the significant digits
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def _cell(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, float):
        return f'<td class="num">{_number(value)}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, dict | list):
        return f"<td><code>{_e(json.dumps(value, sort_keys=True))}</code></td>"
    return f"<td>{_e('' if value is None else value)}</td>"


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]], table_id: str = "") -> str:
    """A table of escaped cells; ``headers`` None makes a key/value table (the first column as row headers)."""
    attr = f' id="{_e(table_id)}"' if table_id else ""
    if headers is None:
        body = "".join(f"<tr><th>{_e(row[0])}</th>{''.join(_cell(v) for v in row[1:])}</tr>" for row in rows)
        return f"<table{attr}><tbody>{body}</tbody></table>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(ok: bool, yes: str, no: str) -> str:
    return f'<span class="badge {"ok" if ok else "bad"}">{_e(yes if ok else no)}</span>'


def _outcomes_badge(outcomes: dict[str, int]) -> str:
    """Green when every scheduled participant ran without failing; else how many failed and did not start."""
    counts = ((outcomes.get("failed", 0), "failed"), (outcomes.get("not_started", 0), "not started"))
    shown = ", ".join(f"{count} {text}" for count, text in counts if count)
    return _badge(not shown, "no failures", shown)


def _interrupted_badge(interrupted: dict[str, Any] | None) -> str:
    if not interrupted:
        return ""
    return _badge(False, "", f"interrupted by {interrupted.get('signal', '?')} at {interrupted.get('at_s', 0):.1f} s")


def _header(report: dict[str, Any]) -> str:
    p = report.get("participants") or {}
    outcomes = p.get("outcomes") or {}
    generator = report.get("generator") or {}
    target = report.get("target") or {}
    config = report.get("config") or {}
    passed = bool(report.get("passed", True))
    valid = bool(generator.get("valid", True))
    url = ", ".join(safe_url(u) for u in target.get("urls") or [target.get("url") or config.get("url")])
    if target.get("embedded_server"):
        url = f"{url} (embedded server)"
    shape = (
        f"{config.get('rooms', '?')} room(s) × {config.get('participants', '?')} participant(s), "
        f"{config.get('rate', '?')} joins/s"
    )
    capacity = report.get("capacity")
    if capacity:  # the engine's config is sized for --max, not the search: show the search's own shape
        start, search = capacity.get("shape") or {}, capacity.get("search") or {}
        shape = (
            f"capacity search growing {capacity.get('grow', '?')} from {start.get('rooms', '?')} room(s) × "
            f"{start.get('participants_per_room', '?')} participant(s), up to {search.get('max', '?')}, "
            f"{start.get('rate', '?')} joins/s"
        )
    summary = [
        ("target", url or "(unknown)"),
        ("started at", report.get("started_at", "")),
        ("duration (s)", report.get("duration_s", "")),
        ("load", shape),
        ("lkswarm", report.get("version", "")),
        ("server version", (report.get("signal") or {}).get("server_version", "")),
        ("scheduled / started / joined", f"{p.get('scheduled', 0)} / {p.get('started', 0)} / {p.get('joined', 0)}"),
        ("active at end", p.get("active_at_end", 0)),
    ]
    parts = [
        "<header><h1>lkswarm report</h1>",
        _badge(passed, "thresholds passed", "thresholds FAILED")
        if report.get("thresholds")
        else '<span class="badge neutral">no thresholds</span>',
        _badge(valid, "generator valid", "generator INVALID"),
        _outcomes_badge(outcomes),
        _interrupted_badge(report.get("interrupted")),
        "</header>",
        table(None, summary, "summary"),
        "<h2>Outcomes</h2>",
        table(list(outcomes), [list(outcomes.values())], "outcomes"),
    ]
    for warning in report.get("warnings") or []:
        parts.append(f'<div class="warn"><b>warning:</b> {_e(warning)}</div>')
    for note in report.get("notes") or []:
        parts.append(f'<div class="note"><b>note:</b> {_e(note)}</div>')
    merged_from = report.get("merged_from") or []
    if merged_from:
        rows = [
            (m.get("started_at"), m.get("duration_s"), safe_url((m.get("target") or {}).get("url")), m.get("passed"))
            for m in merged_from
        ]
        parts += [
            f"<h2>Merged from {len(merged_from)} reports</h2>",
            table(["started at", "s", "target", "passed"], rows),
        ]
    return "\n".join(parts)


def _thresholds(report: dict[str, Any]) -> str:
    thresholds = report.get("thresholds") or []
    if not thresholds:
        return '<h2>Thresholds</h2><p class="muted">no thresholds were set for this run</p>'
    # The verdict is coloured: a failed threshold should not need reading to be seen.
    verdict = {True: Raw('<td class="ok">passed</td>'), False: Raw('<td class="bad">FAILED</td>')}
    rows = [
        (
            t.get("expr", ""),
            t.get("actual", ""),
            f"{t.get('op', '')} {t.get('limit', '')}",
            verdict[bool(t.get("passed"))],
        )
        for t in thresholds
    ]
    return "<h2>Thresholds</h2>" + table(["threshold", "actual", "limit", "verdict"], rows, "thresholds")


def _latency(report: dict[str, Any]) -> str:
    keys = ("count", "min", "p50", "p90", "p99", "p999", "max", "mean")
    rows = [[phase, *(stats.get(k, 0) for k in keys)] for phase, stats in (report.get("latency_ms") or {}).items()]
    headers = ["phase (ms)", "count", "min", "p50", "p90", "p99", "p99.9", "max", "mean"]
    return "<h2>Latency</h2>" + table(headers, rows, "latency")


def _media(report: dict[str, Any]) -> str:
    media = report.get("media") or {}
    rows = [(key, value) for key, value in media.items() if not isinstance(value, dict)]
    jitter = media.get("jitter_ms") or {}
    if jitter.get("count"):
        rows += [(f"jitter {k} (ms)", jitter.get(k, 0.0)) for k in ("p50", "p99", "max")]
    for kind, stats in (media.get("track_subscribed_ms") or {}).items():
        rows += [(f"track_subscribed {kind} {k} (ms)", stats.get(k, 0.0)) for k in ("count", "p50", "p99", "max")]
    return "<h2>Media</h2>" + table(None, rows, "media")


def _generator(report: dict[str, Any]) -> str:
    generator = report.get("generator") or {}
    rows: list[tuple[str, Any]] = []
    for key, value in generator.items():
        if isinstance(value, dict):
            rows += [(f"{key} {k}", value.get(k, 0.0)) for k in ("p50", "p99", "max") if k in value]
        else:
            rows.append((key, value))
    out = "<h2>Generator</h2>" + table(None, rows, "generator")
    workers = report.get("workers") or []
    if workers:  # lkswarm run --workers N: one row per generator process (--ray: per actor, with its node)
        columns: tuple[str, ...] = ("index", "pid", "exit_code", "crashed", "scheduled", "cpu_s", "valid")
        if any("node" in w for w in workers):
            columns = ("index", "node", "host", "pid", "crashed", "scheduled", "joined", "cpu_s", "valid")
        out += "<h3>Generator processes</h3>" + table(
            columns, [[w.get(c, "") for c in columns] for w in workers], "workers"
        )
    return out


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """Nested figures as dotted rows; a latency summary shows its count, p50, p99 and max."""
    if isinstance(value, dict) and "count" in value and "p50" in value:
        return [(f"{prefix} {k}", value.get(k, 0)) for k in ("count", "p50", "p99", "max")]
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flatten(f"{prefix}.{k}" if prefix else str(k), v)]
    return [(prefix, value)]


def _probes(report: dict[str, Any]) -> str:
    probes = report.get("probes") or {}
    if not probes:
        return ""
    # Lists of rows (per probe, failures) get tables of their own; the rest is one key/value table.
    lists = {k: v for k, v in probes.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)}
    scalars = {k: v for k, v in probes.items() if k not in lists}
    parts = ["<h2>Probes</h2>", table(None, _flatten("", scalars), "probes")]
    for name, rows in lists.items():
        headers = list(dict.fromkeys(k for row in rows for k in row))
        shown = [[row.get(h, "") for h in headers] for row in rows[:_MAX_FAILED_ROWS]]
        parts += [f"<h3>probes: {_e(name)}</h3>", table(headers, shown, f"probes-{name}")]
    return "\n".join(parts)


def _data(report: dict[str, Any]) -> str:
    """Data messages: the totals (bursts, resends and slow readers flattened), one row per channel, then the
    data tracks' own table; the slow readers' latency beside everyone else's."""
    data = report.get("data") or {}
    if not data:
        return ""
    apart = ("channels", "latency_ms", "malformed_examples", "tracks")
    rows = _flatten("", {k: v for k, v in data.items() if k not in apart})
    rows += _flatten("latency_ms (data_e2e)", data.get("latency_ms") or {})
    slow_latency = (report.get("latency_ms") or {}).get("data_e2e_slow_readers") or {}
    if slow_latency.get("count"):
        rows += _flatten("latency_ms (data_e2e_slow_readers)", slow_latency)
    channels = data.get("channels") or {}
    headers = ["channel", *dict.fromkeys(k for figures in channels.values() for k in figures)]
    per_channel = [[name, *(figures.get(h, "") for h in headers[1:])] for name, figures in channels.items()]
    out = "<h2>Data messages</h2>" + table(None, rows, "data")
    if per_channel:
        out += table(headers, per_channel, "data-channels")
    tracks = data.get("tracks") or {}
    if tracks:
        track_rows = _flatten("", {k: v for k, v in tracks.items() if k != "latency_ms"})
        track_rows += _flatten("latency_ms (data_track_e2e)", tracks.get("latency_ms") or {})
        out += "<h3>Data tracks</h3>" + table(None, track_rows, "data-tracks")
    return out


def _signal_paths(report: dict[str, Any]) -> str:
    """Per signaling path (``--signal-path``): participants, outcomes, connections; empty before any path ran."""
    rows = [row for row in signal_path_rows(report) if row["participants"] or row["connects"]]
    if not rows:
        return ""
    return "<h2>Signaling paths</h2>" + table(
        SIGNAL_PATH_FIELDS, [[row[h] for h in SIGNAL_PATH_FIELDS] for row in rows], "signal-paths"
    )


def _rooms(report: dict[str, Any]) -> str:
    rooms = report.get("rooms")
    if not rooms:
        return ""
    headers = list(dict.fromkeys(key for room in rooms for key in room))
    return "<h2>Rooms</h2>" + table(headers, [[room.get(h, "") for h in headers] for room in rooms], "rooms")


def _failures(report: dict[str, Any]) -> str:
    p = report.get("participants") or {}
    details = p.get("failure_details") or {}
    parts = ["<h2>Failures</h2>"]
    reasons = [(f"failed:{r}", n, details.get(f"failed:{r}", "")) for r, n in (p.get("failures") or {}).items()]
    reasons += [(f"left:{r}", n, "") for r, n in (p.get("left_reasons") or {}).items()]
    if not reasons:
        parts.append('<p class="muted">no participant failed or was removed</p>')
    else:
        parts.append(table(["outcome", "count", "first detail"], reasons, "failure-reasons"))
    named = report.get("failed_participants") or []
    if named:
        rows = [[r.get(k, "") for k in ("identity", "room", "outcome", "at_s", "detail")] for r in named]
        shown = rows[:_MAX_FAILED_ROWS]
        parts.append(table(["identity", "room", "outcome", "at (s)", "detail"], shown, "failed-participants"))
        if len(rows) > len(shown):
            parts.append(f'<p class="muted">{len(rows) - len(shown)} more in the JSON report</p>')
    return "\n".join(parts)


def _script_json(value: Any) -> str:
    """JSON that is safe inside <script>: no '<' at all, so no report string can end the element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plot_divs(built: list[tuple[str, Figure | None, str]], figures: dict[str, Figure]) -> str:
    """A div per plot (or the reason there is none); the figures to draw are added to ``figures`` by id."""
    divs = []
    for plot_id, figure, missing in built:
        if figure is None:
            divs.append(f'<div class="missing" id="{_e(plot_id)}">{_e(missing)}</div>')
        else:
            divs.append(f'<div class="plot" id="{_e(plot_id)}"></div>')
            figures[plot_id] = figure
    return "\n".join(divs)


def _capacity(report: dict[str, Any], figures: dict[str, Figure]) -> str:
    """`lkswarm capacity`: the verdict in words, the levels table and the search's plots; '' for other reports."""
    if not isinstance(report.get("capacity"), dict):
        return ""
    section: CapacitySection = report["capacity"]
    header, *rows = levels_table(section)
    verdict = header.index("verdict")
    for row in rows:  # coloured like the thresholds' verdicts: PASS or not, seen without reading
        cell = Raw(f'<td class="{"ok" if row[verdict] == "PASS" else "bad"}">{_e(row[verdict])}</td>')
        row[verdict] = cell
    summary = section.get("summary") or summary_paragraph(section)
    return "\n".join(
        [
            "<h2>Capacity</h2>",
            f'<p id="capacity-summary">{_e(summary)}</p>',
            table(header, rows, "capacity-levels"),
            _plot_divs(capacity_plots(report), figures),
        ]
    )


def _draw_script(figures: dict[str, Figure]) -> str:
    # data-plots-drawn / data-plot-error on <body> tell a headless browser (and the tests) how drawing went.
    return (
        "const FIGURES = " + _script_json(figures) + ";\n"
        "const plotFailed = (err) => { document.body.dataset.plotError = String(err); };\n"
        "try {\n"
        "  Promise.all(Object.entries(FIGURES).map(([id, fig]) =>\n"
        "    Plotly.newPlot(id, fig.data, fig.layout, {displaylogo: false, responsive: true})))\n"
        "    .then((plots) => { document.body.dataset.plotsDrawn = String(plots.length); })\n"
        "    .catch(plotFailed);\n"
        "} catch (err) { plotFailed(err); }\n"
    )


def render_html(report: dict[str, Any], plotly_js: str | None = None) -> str:
    """The whole page as one string; ``plotly_js`` defaults to the bundle of the installed plotly package."""
    if plotly_js is None:
        from plotly.offline import get_plotlyjs  # imported late: 4.8 MB of JavaScript read from disk

        plotly_js = str(get_plotlyjs())
    figures: dict[str, Figure] = {}  # every plot on the page, drawn by one script at the end
    capacity = _capacity(report, figures)
    plots = "<h2>Plots</h2>\n" + _plot_divs(build_figures(report), figures)
    title = f"lkswarm report {report.get('started_at', '')}"
    body = "\n".join(
        [
            _header(report),
            capacity,
            _thresholds(report),
            plots,
            _latency(report),
            _media(report),
            _probes(report),
            _data(report),
            _signal_paths(report),
            _rooms(report),
            _failures(report),
            _generator(report),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n"
        f'<script type="text/javascript">{plotly_js}</script>\n</head>\n<body>\n{body}\n'
        f'<script type="text/javascript">\n{_draw_script(figures)}</script>\n</body>\n</html>\n'
    )
