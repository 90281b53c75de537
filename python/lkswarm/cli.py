"""The ``lkswarm`` command line."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import rich.markup
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from lkswarm import __version__
from lkswarm.auth import Credentials
from lkswarm.cli_reports import register as register_report_commands
from lkswarm.cli_reports import write_outputs
from lkswarm.errors import ConfigError, LkswarmError
from lkswarm.server import DEFAULT_PORT, DEFAULT_UDP_PORT, LocalServer

app = typer.Typer(
    help="Load generator and signaling benchmark for LiveKit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True, soft_wrap=True)
stdout = Console()

F = TypeVar("F", bound=Callable[..., Any])

ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="LIVEKIT_API_KEY", help="API key.", show_envvar=True, rich_help_panel="Connection"
    ),
]
ApiSecret = Annotated[
    str | None,
    typer.Option(
        "--api-secret",
        envvar="LIVEKIT_API_SECRET",
        help="API secret (never printed or written to a report).",
        show_envvar=True,
        show_default=False,
        rich_help_panel="Connection",
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    # The message may quote a tool's output or a user's text: print it literally, never as markup.
    stderr.print(f"[bold red]error:[/] {rich.markup.escape(message)}", highlight=False)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"lkswarm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Load generator and signaling benchmark for LiveKit."""


@app.command()
def server(
    port: Annotated[int, typer.Option(help="Signaling (HTTP/WebSocket) port.")] = DEFAULT_PORT,
    udp_port: Annotated[int, typer.Option(help="Single UDP port for media.")] = DEFAULT_UDP_PORT,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    show_secret: Annotated[bool, typer.Option(help="Also print the API secret.")] = False,
) -> None:
    """Run a development livekit-server on 127.0.0.1 until Ctrl-C."""
    try:
        credentials = Credentials.from_env(api_key, api_secret)
        local = LocalServer(credentials, port=port, udp_port=udp_port)
        try:
            local.start()
        except KeyboardInterrupt:
            local.stop()
            raise typer.Exit(130) from None
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    # Ctrl-C and SIGTERM only set a flag: the loop below then stops the server cleanly.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stdout.print(f"livekit-server ready at [bold]{local.url}[/] (UDP {local.udp_port}, pid {local.pid})")
    stdout.print(f"API key: {credentials.api_key}")
    if show_secret:
        stdout.print(f"API secret: {credentials.api_secret}")
    stdout.print("Press Ctrl-C to stop.")
    try:
        while not stop.wait(0.5):
            if not local.running():
                local.stop()
                raise fail(f"livekit-server exited unexpectedly: {local.log_tail()}")
    finally:
        local.stop()
    stdout.print("livekit-server stopped.")


CONNECTION = "Connection"
SHAPE = "Load shape"
BEHAVIOUR = "Behaviour"
OUTPUT = "Output"


@app.command(
    epilog=(
        "Examples:  lkswarm run --rooms 2 --participants 50 --audio-publishers 2 --duration 60s --html report.html"
        "  ·  lkswarm run --preset audio-room --participants 200  ·  lkswarm run scenario.toml --threshold "
        "'join_response.p99<500ms'"
    )
)
def run(
    scenario: Annotated[
        Path | None,
        typer.Argument(help="Scenario file (TOML); flags override its keys.", show_default=False),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Run a shipped scenario (`lkswarm presets` lists them).", rich_help_panel=SHAPE)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="LIVEKIT_URL",
            show_envvar=True,
            help="Server URL; without it an embedded local livekit-server runs for the run.",
            rich_help_panel=CONNECTION,
        ),
    ] = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    i_have_permission: Annotated[
        bool,
        typer.Option(
            "--i-have-permission",
            help="Allow more than 50 participants against *.livekit.cloud.",
            rich_help_panel=CONNECTION,
        ),
    ] = False,
    rooms: Annotated[int | None, typer.Option(help="Number of rooms. (default 2)", rich_help_panel=SHAPE)] = None,
    participants: Annotated[
        int | None, typer.Option(help="Participants per room. (default 10)", rich_help_panel=SHAPE)
    ] = None,
    audio_publishers: Annotated[
        str | None, typer.Option(help="Opus publishers per room, or 'all'. (default 0)", rich_help_panel=SHAPE)
    ] = None,
    video_publishers: Annotated[
        str | None, typer.Option(help="VP8 publishers per room, or 'all'. (default 0)", rich_help_panel=SHAPE)
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Joins started per second (open model). (default 20)", rich_help_panel=SHAPE)
    ] = None,
    arrival: Annotated[
        str | None,
        typer.Option(help="Arrival process: constant or poisson. (default constant)", rich_help_panel=SHAPE),
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Run length: seconds, or 30s / 2m. (default 10s)", rich_help_panel=SHAPE)
    ] = None,
    churn_rate: Annotated[
        float | None,
        typer.Option(help="Once ramped, replace this many participants per second.", rich_help_panel=SHAPE),
    ] = None,
    reconnect_storm_at: Annotated[
        str | None,
        typer.Option(help="At this time every participant drops its WebSocket and resumes.", rich_help_panel=SHAPE),
    ] = None,
    reconnect_storm_mode: Annotated[
        str | None,
        typer.Option(
            help="The storm's reconnect: resume (reconnect=1, the default) or rejoin (a fresh join with new "
            "PeerConnections, as after the server's leave RECONNECT).",
            rich_help_panel=SHAPE,
        ),
    ] = None,
    signal_only: Annotated[
        bool,
        typer.Option(
            "--signal-only",
            help="Signaling only: no PeerConnections (the server evicts such participants after 60 s).",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = False,
    probes: Annotated[
        int | None,
        typer.Option(
            help="Participants (of all rooms) that are aiortc probes: real VP8/Opus, e2e latency.",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = None,
    probe_fraction: Annotated[
        float | None, typer.Option(help="Or: this fraction of the participants are probes.", rich_help_panel=BEHAVIOUR)
    ] = None,
    probe_impair: Annotated[
        str | None,
        typer.Option(
            help="Impair each probe's media each way with Linux netem/htb in a network namespace (root, embedded "
            "server): loss=2%,delay=40ms,jitter=10ms,rate=1mbit, any subset; each probe has a link of its own.",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = None,
    video_codec: Annotated[
        str | None, typer.Option(help="Published video codec: vp8 or h264. (default vp8)", rich_help_panel=BEHAVIOUR)
    ] = None,
    simulcast: Annotated[
        bool | None,
        typer.Option(
            "--simulcast/--no-simulcast",
            help="Video as 3 simulcast layers (q/h/f). (default simulcast)",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(help="Subscriber video layout: speaker or grid:N (track settings).", rich_help_panel=BEHAVIOUR),
    ] = None,
    simulate_speakers: Annotated[
        bool,
        typer.Option(
            "--simulate-speakers",
            "--talk-spurts",
            help="Audio in ITU-T P.59 talk spurts with levels, so active speakers switch.",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = False,
    json_frames: Annotated[
        bool,
        typer.Option(
            "--json-frames", help="Send JSON text frames instead of binary protobuf.", rich_help_panel=BEHAVIOUR
        ),
    ] = False,
    resume_on_disconnect: Annotated[
        bool | None,
        typer.Option(help="Resume (reconnect=1) when a WebSocket drops.", rich_help_panel=BEHAVIOUR),
    ] = None,
    verify_rooms: Annotated[
        bool | None,
        typer.Option(
            help="At the end, compare each room view with ListParticipants. (default on)", rich_help_panel=BEHAVIOUR
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for arrivals and media.", rich_help_panel=BEHAVIOUR)] = None,
    workers: Annotated[
        str | None,
        typer.Option(
            help="Generator processes on this machine, or 'auto' (one per core): rooms are split among them and "
            "their reports merged into one. (default 1)",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report (lkswarm.report/1) here.", rich_help_panel=OUTPUT)
    ] = None,
    csv_dir: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Write CSV tables (phases, rooms, tracks, failures, timeline) here.", rich_help_panel=OUTPUT
        ),
    ] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Write a single-file HTML report with plots.", rich_help_panel=OUTPUT)
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="Pass/fail check, k6 style (repeatable): 'join_response.p99<500ms', 'failed==0'. A failure exits 99.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(help="Serve live lkswarm_* metrics at HOST:PORT/metrics.", rich_help_panel=OUTPUT),
    ] = None,
    quiet: Annotated[
        bool, typer.Option(help="No live view and no summary; errors only.", rich_help_panel=OUTPUT)
    ] = False,
) -> None:
    """Run participants against a LiveKit server and report what happened to each of them.

    Exit codes: 0 pass; 99 a threshold failed; 1 run error (without thresholds: any failure); 2 bad usage.
    """
    from lkswarm.config import RunConfig
    from lkswarm.probe import probe_count
    from lkswarm.runner import check_cloud_guard, check_probe_network, run_scenario
    from lkswarm.scenario import Scenario, first_error, load_preset, load_scenario
    from lkswarm.thresholds import parse_thresholds
    from lkswarm.timeline import Observer
    from lkswarm.workers import check_workers, parse_workers, run_workers

    flags: dict[str, Any] = {
        "url": url,
        "rooms": rooms,
        "participants": participants,
        "audio_publishers": _publishers(audio_publishers),
        "video_publishers": _publishers(video_publishers),
        "rate": rate,
        "arrival": arrival,
        "duration_s": duration,
        "churn_rate": churn_rate,
        "reconnect_storm_at_s": reconnect_storm_at,
        "reconnect_storm_mode": reconnect_storm_mode,
        "probes": probes,
        "probe_fraction": probe_fraction,
        "probe_impair": probe_impair,
        "video_codec": video_codec,
        "simulcast": simulcast,
        "layout": layout,
        "resume_on_disconnect": resume_on_disconnect,
        "verify_rooms": verify_rooms,
        "seed": seed,
        "signal_only": signal_only or None,
        "talk_spurts": simulate_speakers or None,
        "json_frames": json_frames or None,
    }
    try:
        if scenario is not None and preset is not None:
            raise ConfigError("give a scenario file or --preset, not both")
        base = load_scenario(scenario) if scenario is not None else load_preset(preset) if preset else Scenario()
        if "reconnect_storm_at_s" in base.fields or reconnect_storm_at is not None:
            flags["resume_on_disconnect"] = True if resume_on_disconnect is None else resume_on_disconnect
        fields = {**base.fields, **{k: v for k, v in flags.items() if v is not None}}
        if base.fields.get("stages") and any(flags[k] is not None for k in ("rate", "duration_s", "participants")):
            fields.pop("stages")  # explicit load-shape flags replace the file's stages
        credentials = Credentials.from_env(api_key, api_secret)
        config = RunConfig(**fields)
        thresholds = parse_thresholds([*base.thresholds, *(threshold or [])])
        probe_count(config)  # --probes and --probe-fraction against the run's size: a bad option, exit 2
        check_cloud_guard(config, i_have_permission)
        check_probe_network(config)
        worker_count = parse_workers(workers, config.rooms)
        check_workers(config, worker_count)
        observers: list[Observer] = []
        if prometheus is not None and worker_count > 1:
            from lkswarm.prometheus import parse_address

            parse_address(prometheus)  # the parent serves the workers' sum there
        elif prometheus is not None:
            from lkswarm.prometheus import PrometheusExporter

            observers.append(PrometheusExporter(prometheus))
    except ValidationError as exc:
        raise fail(f"invalid option: {first_error(exc)}", 2) from None
    except LkswarmError as exc:
        raise fail(str(exc), 2) from None
    if not quiet and stderr.is_terminal and worker_count == 1:
        from lkswarm.live import LiveView

        observers.append(LiveView(stderr))

    def announce(local: LocalServer) -> None:
        if not quiet:
            stdout.print(f"started embedded livekit-server at {local.url}")

    if not quiet and base.name:
        stdout.print(f"scenario {base.name}: {base.description}", highlight=False)
    if not quiet and worker_count > 1:
        stdout.print(f"{worker_count} generator processes, rooms split among them")
    try:
        if worker_count > 1:
            combined_view = None
            if not quiet and stderr.is_terminal:
                from lkswarm.live import LiveView

                combined_view = LiveView(stderr)
                combined_view.open(config.duration_s)
            try:
                result = run_workers(
                    config,
                    credentials,
                    worker_count,
                    on_server=announce,
                    thresholds=thresholds,
                    prometheus=prometheus,
                    on_sample=combined_view.on_sample if combined_view is not None else None,
                )
            finally:
                if combined_view is not None:
                    combined_view.close()
        else:
            result = run_scenario(config, credentials, on_server=announce, observers=observers, thresholds=thresholds)
        written = write_outputs(
            result.report, json_path=json_path, html_path=html_path, csv_dir=csv_dir, track_rows=result.track_rows
        )
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    report = result.report
    if not quiet:
        print_report(report)
        for path in written:
            stdout.print(f"wrote {path}", highlight=False)
    raise typer.Exit(exit_code(report))


@app.command(hidden=True)
def worker(job: Annotated[Path, typer.Argument(help="The job file the parent wrote.")]) -> None:
    """One generator process of `lkswarm run --workers N` (internal; see lkswarm.workers)."""
    from lkswarm.workers import run_worker_job

    raise typer.Exit(run_worker_job(job))


def exit_code(report: dict[str, Any]) -> int:
    """0 pass, 99 a threshold failed, 1 the run itself failed (see `run --help`)."""
    p = report["participants"]
    outcomes = p["outcomes"]
    if report["thresholds"]:
        if p["started"] and not p["joined"]:
            return 1  # nobody joined: a run error whatever the thresholds say
        return 0 if report["passed"] else 99
    return 1 if outcomes["failed"] or outcomes["not_started"] else 0


def _publishers(value: str | None) -> int | str | None:
    """``--audio-publishers 3`` or ``all``; anything else is left for RunConfig to reject."""
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise fail(f"invalid option: publishers must be a number or 'all', not {value!r}", 2) from None


@app.command()
def presets() -> None:
    """List the shipped scenarios (run one with `lkswarm run --preset NAME`)."""
    from lkswarm.scenario import load_preset, preset_names

    table = Table(title="presets (lkswarm run --preset NAME; flags override their keys)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("thresholds")
    for name in preset_names():
        scenario = load_preset(name)
        table.add_row(name, scenario.description, "\n".join(scenario.thresholds))
    stdout.print(table)


def print_report(report: dict[str, Any]) -> None:
    p = report["participants"]
    table = Table(title=f"lkswarm: {p['joined']}/{p['scheduled']} joined in {report['duration_s']:.1f} s")
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
    m = report["media"]
    if m["packets_received"] or m["packets_sent"]:
        stdout.print(
            f"media: active at end {p['active_at_end']}, received {m['packets_received']} packets on "
            f"{m['tracks_received']} tracks ({m['tracks_missing']} missing), loss {m['loss_ratio'] * 100:.2f} %, "
            f"jitter p99 {m['jitter_ms']['p99']:.1f} ms, sent {m['packets_sent']} packets"
        )
        by_kind = m.get("track_subscribed_ms") or {}
        if by_kind:
            parts = ", ".join(f"{kind} p50 {s['p50']:.0f} / p99 {s['p99']:.0f} ms" for kind, s in by_kind.items())
            stdout.print(f"track_subscribed by kind: {parts}")
    probes = report.get("probes") or {}
    if probes:
        stdout.print(
            f"probes: {probes['active_at_end']}/{probes['count']} active, {probes['frames_decoded']} frames decoded "
            f"({probes['frame_rate_fps']['mean']:.1f} fps), {probes['freezes']} freezes, "
            f"{probes['decode_errors']} decode errors, audio loss {probes['audio']['loss_ratio'] * 100:.2f} %, "
            f"cpu {probes['cpu_s']:.1f} s"
        )
    g = report["generator"]
    media_lag = g.get("media_lag_ms") or {}
    stdout.print(
        f"generator: cpu {g['cpu_s']:.2f} s, max rss {g['max_rss_mb']:.0f} MB, "
        f"loop lag p99 {g['loop_lag_ms']['p99']:.1f} ms, "
        + (f"media thread lag p99 {media_lag['p99']:.1f} ms, " if media_lag.get("count") else "")
        + f"late starts {g['late_starts']}"
    )
    if report["signal"]["server_version"]:
        stdout.print(f"server version {report['signal']['server_version']}")
    for note in report["notes"]:
        stdout.print(f"[yellow]note:[/] {note}", highlight=False)
    for check in report["thresholds"]:
        mark = "[green]✓[/]" if check["passed"] else "[bold red]✗[/]"
        actual = "no data" if check["actual"] is None else f"{check['actual']:g}"
        stdout.print(f"{mark} threshold {check['expr']}  (actual {actual})", highlight=False)
    for warning in report["warnings"]:
        stdout.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


register_report_commands(app)


# Typer ships its own copy of click's exceptions; reach them through the public BadParameter.
_CLICK_TYPES = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
_USAGE_ERROR: type[Any] = _CLICK_TYPES["UsageError"]
_CLICK_EXCEPTION: type[Any] = _CLICK_TYPES["ClickException"]


def main() -> None:
    """Entry point of the ``lkswarm`` script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        # Not standalone: click's usage errors come back here and get one line, not a box.
        code = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        if not exc.format_message():  # no_args_is_help: the help went out already
            sys.exit(2)
        command = f" {exc.ctx.command_path.split(' ', 1)[1]}" if exc.ctx and " " in exc.ctx.command_path else ""
        stderr.print(f"[bold red]error:[/] {exc.format_message()} (see lkswarm{command} --help)", highlight=False)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except _CLICK_EXCEPTION as exc:
        stderr.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False)
        sys.exit(exc.exit_code)
    except LkswarmError as exc:  # anything a command did not turn into a message itself
        stderr.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
