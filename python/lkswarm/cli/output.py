"""What the command line prints: the two consoles, one-line errors, the run summary and the exit code.

Off a terminal (a file or a pipe) nothing is folded at 80 columns: a summary line such as
"loss 0.00 %" stays on one line, whatever reads it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from lkswarm.observe.live import LiveView

UNFOLDED_WIDTH = 1000  # columns off a terminal: wide enough that no summary line or table wraps
# --help off a terminal: typer's panels pad every line to the full width, so not 1000; at this width
# every option's help of `run` fits on its line.
HELP_WIDTH = 160


def _width(stream: Any, off_terminal: int = UNFOLDED_WIDTH) -> int | None:
    """None on a terminal (rich measures it) or when COLUMNS says; otherwise ``off_terminal``."""
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return off_terminal


def unfold_help(argv: list[str]) -> None:
    """Typer's --help off a terminal: no folding at 80 columns either (unless TERMINAL_WIDTH says).

    Only where help is printed (``--help``, or no arguments at all): typer's help renderer imports rich's
    markdown, pretty and traceback modules and pygments, about 30 ms that a run does not need.
    """
    if len(argv) > 1 and "--help" not in argv:
        return
    import typer.rich_utils

    if typer.rich_utils.MAX_WIDTH is None:
        typer.rich_utils.MAX_WIDTH = _width(sys.stdout, HELP_WIDTH)


class LazyConsole:
    """A rich ``Console``, built (and rich imported) on first use.

    A quiet run prints nothing unless it fails, and importing rich costs about 40 ms of CPU at every start;
    so neither console exists until something is printed. Attributes are the console's; `console` is the
    console itself, for what needs a real one (rich's ``Live``).
    """

    def __init__(self, *, to_stderr: bool) -> None:
        self._to_stderr = to_stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            if self._to_stderr:
                self._console = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))
            else:
                self._console = Console(width=_width(sys.stdout))
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


stderr = LazyConsole(to_stderr=True)
stdout = LazyConsole(to_stderr=False)


def combined_live_view(quiet: bool) -> LiveView | None:
    """One live view of several generators' samples (``--workers``, ``--ray``), on a terminal unless quiet."""
    if quiet or not stderr.is_terminal:
        return None
    from lkswarm.observe.live import LiveView

    return LiveView(stderr.console)


def fail(message: str, code: int = 1) -> typer.Exit:
    # The message may quote a tool's output or a user's text: print it literally, never as markup.
    import rich.markup

    stderr.print(f"[bold red]error:[/] {rich.markup.escape(message)}", highlight=False)
    return typer.Exit(code)


def exit_code(report: dict[str, Any]) -> int:
    """0 pass, 99 a threshold failed, 1 the run itself failed, 128 + N a signal N stopped it (see `run --help`)."""
    interrupted = report.get("interrupted")
    if interrupted:
        return 128 + int(getattr(signal.Signals, str(interrupted.get("signal")), signal.SIGINT))
    p = report["participants"]
    outcomes = p["outcomes"]
    if report["thresholds"]:
        if p["started"] and not p["joined"]:
            return 1  # nobody joined: a run error whatever the thresholds say
        return 0 if report["passed"] else 99
    return 1 if outcomes["failed"] or outcomes["not_started"] else 0


def threshold_actual(check: dict[str, Any]) -> str:
    """A threshold's actual value in its key's unit (`47.6 ms` for a latency written as `<2s`; a ratio as a
    percentage too), so that it reads against the limit as written."""
    actual, key = check["actual"], str(check.get("key") or "")
    if actual is None:
        return "no data"
    if key.rsplit(".", 1)[-1] == "count":
        return f"{actual:g}"
    if "_ms" in key:  # latency_ms.PHASE.STAT, generator.media_lag_ms.p99, ...
        return f"{actual:g} ms"
    if key.endswith("_s"):
        return f"{actual:g} s"
    if key.endswith("ratio"):
        return f"{actual:g} = {actual * 100:.3g} %"
    return f"{actual:g}"


def _percent(ratio: float | None) -> str:
    """``1.25 %``, or an en dash where there was nothing to take a ratio of."""
    return "–" if ratio is None else f"{ratio * 100:.2f} %"


def _fps(rate: float | None) -> str:
    return "no frame rate" if rate is None else f"{rate:.1f} fps"


def failure_line(report: dict[str, Any], code: int) -> str | None:
    """Why the run exits ``code`` (1 or 99), in one line: what ``--quiet`` still prints ("errors only")."""
    if code == 99:
        failed = [t for t in report.get("thresholds") or [] if not t.get("passed")]
        shown = ", ".join(f"{t['expr']} (actual {threshold_actual(t)})" for t in failed[:3])
        return f"{len(failed)} threshold(s) failed: {shown}"
    if code != 1:
        return None
    p = report["participants"]
    o = p["outcomes"]
    if not (o["failed"] or o["not_started"] or (p["started"] and not p["joined"])):
        return None
    reasons = sorted(p["failures"].items(), key=lambda item: -item[1])
    if reasons:
        reason, count = reasons[0]
        detail = p["failure_details"].get(f"failed:{reason}", "")
        first = f"; {reason} {count}" + (f": {detail}" if detail else "")
    else:
        first = ""
    return f"{o['failed']} of {p['scheduled']} participants failed, {o['not_started']} not started{first}"


def data_line(data: dict[str, Any]) -> str:
    """``data: sent 1,500, received 28,500 of 28,500 expected (delivery 100.00 %), e2e p50 / p99 …``."""
    delivery = data.get("delivery_ratio")
    latency = data.get("latency_ms") or {}
    line = (
        f"data: sent {data['messages_sent']:,}, received {data['messages_received']:,} of "
        f"{data['messages_expected']:,} expected"
        + (f" (delivery {delivery * 100:.2f} %)" if delivery is not None else "")
        + f", {data['duplicates']} duplicates, {data['out_of_order']} out of order"
    )
    if latency.get("count"):
        line += f", e2e p50 {latency['p50']:.1f} / p99 {latency['p99']:.1f} ms"
    if data.get("foreign_messages"):
        line += f", {data['foreign_messages']:,} from other clients"
    if data.get("send_blocked"):
        line += f", {data['send_blocked']:,} not sent (channel buffer full)"
    return line


def data_lines(data: dict[str, Any]) -> list[str]:
    """The summary's data lines: messages (when any were sent or received), data tracks, RPC (when used)."""
    lines = []
    if data.get("publishers") or data.get("messages_received") or data.get("foreign_messages"):
        lines.append(data_line(data))
    tracks = data.get("tracks") or {}
    if tracks.get("tracks_published") or tracks.get("frames_received") or tracks.get("publish_failures"):
        lines.append(data_tracks_line(tracks))
    rpc = data.get("rpc") or {}
    if rpc.get("requests"):
        shown = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in rpc.items() if k != "requests" and v)
        lines.append(f"rpc: {rpc['requests']:,} requests to our participants" + (f" ({shown})" if shown else ""))
    return lines


def data_tracks_line(tracks: dict[str, Any]) -> str:
    """``data tracks: 2 published, sent 992 frames, received 4,896 of 4,896 expected (delivery 100.00 %), …``."""
    delivery = tracks.get("delivery_ratio")
    line = (
        f"data tracks: {tracks['tracks_published']} published, sent {tracks['frames_sent']:,} frames, received "
        f"{tracks['frames_received']:,} of {tracks['frames_expected']:,} expected"
        + (f" (delivery {delivery * 100:.2f} %)" if delivery is not None else "")
    )
    latency = tracks.get("latency_ms") or {}
    if latency.get("count"):
        line += f", e2e p50 {latency['p50']:.1f} / p99 {latency['p99']:.1f} ms"
    for key, words in (
        ("publish_failures", "publishes refused"),
        ("send_blocked", "not sent (buffer full)"),
        ("foreign_frames", "from other clients"),
        ("malformed", "malformed"),
    ):
        if tracks.get(key):
            line += f", {tracks[key]:,} {words}"
    return line


def signal_paths_line(paths: dict[str, Any]) -> str:
    """``signal paths: v1 8 (completed 8), v0 2 (completed 2); auto fell back 2 times``; "" when there is nothing."""
    parts = []
    for path in ("v1", "v0"):
        figures = paths.get(path) or {}
        if figures.get("participants"):
            outcomes = ", ".join(f"{kind} {count}" for kind, count in figures["outcomes"].items() if count)
            parts.append(f"{path} {figures['participants']} ({outcomes})")
    if not parts:
        return ""
    line = "signal paths: " + ", ".join(parts)
    if paths.get("fallbacks"):
        line += f"; auto fell back from /rtc/v1 to /rtc {paths['fallbacks']} times (404)"
    if paths.get("media_sections_requirements"):
        line += f"; {paths['media_sections_requirements']} media_sections_requirement re-offers asked"
    return line


def server_line(report: dict[str, Any]) -> str | None:
    """The server's side of the run, as it counted it (its Prometheus metrics): its CPU, the loss it saw coming in
    and going out, its RTT to our subscribers and its quality score; None without its metrics."""
    server = report.get("server") or {}
    if not server.get("available"):
        return None
    parts = [f"cpu {server['cpu_s']:.1f} s ({server['cores']:.2f} cores)"]
    parts.append(f"loss in {_percent(server.get('loss_in_ratio'))}, out {_percent(server.get('loss_out_ratio'))}")
    if server.get("rtt_out_ms_mean") is not None:
        parts.append(f"rtt to subscribers {server['rtt_out_ms_mean']:.1f} ms")
    if server.get("quality_score_mean") is not None:
        parts.append(f"quality score {server['quality_score_mean']:.2f} (MOS, best 4.5)")
    return "server (its own metrics): " + ", ".join(parts)


def print_report(report: dict[str, Any]) -> None:
    p = report["participants"]
    from rich.table import Table

    table = Table(title=f"lkswarm: {p['joined']}/{p['scheduled']} joined, a run of {report['duration_s']:.1f} s")
    for column in ("phase", "count", "p50", "p90", "p99", "p99.9", "max"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase, stats in report["latency_ms"].items():
        if stats["count"]:
            table.add_row(
                f"{phase} (ms)", str(stats["count"]), *(f"{stats[k]:.1f}" for k in ("p50", "p90", "p99", "p999", "max"))
            )
    stdout.print(table)
    o = p["outcomes"]
    stdout.print(
        f"outcomes: completed {o['completed']}, left {o['left']}, failed {o['failed']}, not started {o['not_started']}"
    )
    for reason, count in p["failures"].items():
        detail = p["failure_details"].get(f"failed:{reason}", "")
        stdout.print(f"[red]failed:{reason}[/] {count}  {detail}", highlight=False)
    for reason, count in p["left_reasons"].items():
        stdout.print(f"left:{reason} {count}")
    m = report.get("media") or {}
    if m.get("packets_received") or m.get("packets_sent"):
        jitter = f"{m['jitter_ms']['p99']:.1f} ms" if m["tracks_received"] else "–"  # nothing received: no jitter
        stdout.print(
            f"media: active at end {p['active_at_end']}, received {m['packets_received']} packets on "
            f"{m['tracks_received']} tracks ({m['tracks_missing']} missing), loss {_percent(m['loss_ratio'])}, "
            f"jitter p99 {jitter}, sent {m['packets_sent']} packets"
        )
        by_kind = m.get("track_subscribed_ms") or {}
        if by_kind:
            parts = ", ".join(f"{kind} p50 {s['p50']:.0f} / p99 {s['p99']:.0f} ms" for kind, s in by_kind.items())
            stdout.print(f"track_subscribed by kind: {parts}")
    for line in data_lines(report.get("data") or {}):
        stdout.print(line, highlight=False)
    probes = report.get("probes") or {}
    if probes:
        stdout.print(
            f"probes: {probes['active_at_end']}/{probes['count']} active, {probes['frames_decoded']} frames decoded "
            f"({_fps(probes['frame_rate_fps']['mean'])}), {probes['freezes']} freezes, "
            f"{probes['decode_errors']} decode errors, audio loss {_percent(probes['audio']['loss_ratio'])}, "
            f"cpu {probes['cpu_s']:.1f} s"
        )
    if server := server_line(report):
        stdout.print(server, highlight=False)
    g = report["generator"]
    media_lag = g.get("media_lag_ms") or {}
    media_thread_cpu_s = ((report.get("media") or {}).get("hub") or {}).get("thread_cpu_s")
    if "cpu_s" in g:  # a crashed worker's report has no generator figures
        stdout.print(
            f"generator: cpu {g['cpu_s']:.2f} s"
            + (f" (media thread {media_thread_cpu_s:.2f} s)" if media_thread_cpu_s is not None else "")
            + f", max rss {g['max_rss_mb']:.0f} MB, "
            f"loop lag p99 {g['loop_lag_ms']['p99']:.1f} ms, "
            + (f"media thread lag p99 {media_lag['p99']:.1f} ms, " if media_lag.get("count") else "")
            + f"late starts {g['late_starts']}"
        )
    paths = (report.get("signal") or {}).get("paths")
    if paths and (line := signal_paths_line(paths)):
        stdout.print(line, highlight=False)
    server_version = (report.get("signal") or {}).get("server_version")
    if server_version:
        stdout.print(f"server version {server_version}")
    for note in report["notes"]:
        stdout.print(f"[yellow]note:[/] {note}", highlight=False)
    for check in report["thresholds"]:
        mark = "[green]✓[/]" if check["passed"] else "[bold red]✗[/]"
        stdout.print(f"{mark} threshold {check['expr']}  (actual {threshold_actual(check)})", highlight=False)
    for warning in report["warnings"]:
        stdout.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def print_capacity(report: dict[str, Any], *, with_warnings: bool = True) -> None:
    """The search's levels table, its core sweep, its verdict and plan notes (and the report's warnings)."""
    from rich.table import Table

    from lkswarm.report.capacity_text import levels_table

    rows = levels_table(report["capacity"])
    if rows:
        table = Table(title="capacity search")
        for column in rows[0]:
            table.add_column(column)
        for row in rows[1:]:
            table.add_row(*row)
        stdout.print(table)
    sweep = report["capacity"].get("sweep")
    if sweep:
        table = Table(title="core sweep (one search per --server-cpus value)")
        for column in ("server cores", "capacity", "interval", "limiting", "per core"):
            table.add_column(column)
        for row in sweep["rows"]:
            lower, upper = row["interval"]
            table.add_row(
                f"{row['cpus']:g}",
                str(row["value"]),
                f"{lower}-{upper if upper is not None else '?'}",
                str(row["limiting"]),
                f"{row['per_cpu']:g}" if row["per_cpu"] is not None else "-",
            )
        stdout.print(table)
    stdout.print(report["capacity"]["summary"], highlight=False)
    for note in report["capacity"]["plan"].get("notes", []):
        stdout.print(f"note: {note}", highlight=False)
    if with_warnings:
        for warning in report.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
