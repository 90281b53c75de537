"""The ``lkswarm`` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from lkswarm import __version__
from lkswarm.auth import Credentials
from lkswarm.errors import LkswarmError
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

ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="LIVEKIT_API_KEY", help="API key.", show_envvar=True)]
ApiSecret = Annotated[
    str | None,
    typer.Option("--api-secret", envvar="LIVEKIT_API_SECRET", help="API secret.", show_envvar=True, show_default=False),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
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


@app.command()
def run(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="LIVEKIT_URL", show_envvar=True, help="Server URL; without it an embedded local server runs."
        ),
    ] = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    rooms: Annotated[int, typer.Option(min=1, help="Number of rooms.")] = 2,
    participants: Annotated[int, typer.Option(min=1, help="Participants per room.")] = 10,
    rate: Annotated[float, typer.Option(min=0.001, help="Joins started per second (open model).")] = 20.0,
    arrival: Annotated[str, typer.Option(help="Arrival process: constant or poisson.")] = "constant",
    duration: Annotated[str, typer.Option(help="Run length: seconds, or 30s / 2m.")] = "10s",
    audio_publishers: Annotated[int, typer.Option(min=0, help="Audio publishers per room (Opus).")] = 0,
    video_publishers: Annotated[int, typer.Option(min=0, help="Video publishers per room (VP8).")] = 0,
    simulcast: Annotated[bool, typer.Option(help="Publish video as 3 simulcast layers (q/h/f).")] = True,
    talk_spurts: Annotated[bool, typer.Option(help="Audio follows ITU-T P.59 talk spurts.")] = False,
    signal_only: Annotated[
        bool, typer.Option(help="Signaling only: no PeerConnections (the server evicts such participants after 60 s).")
    ] = False,
    json_frames: Annotated[bool, typer.Option(help="Send JSON text frames instead of binary protobuf.")] = False,
    resume_on_disconnect: Annotated[bool, typer.Option(help="Resume (reconnect=1) when a WebSocket drops.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for Poisson arrivals.")] = None,
    verify_rooms: Annotated[
        bool, typer.Option(help="At the end, compare each participant's room view with ListParticipants.")
    ] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report (lkswarm.report/1) here.")] = None,
    csv_dir: Annotated[
        Path | None, typer.Option("--csv", help="Write per-track media detail (tracks.csv) into this folder.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Print only errors.")] = False,
) -> None:
    """Run participants against a LiveKit server and report what happened to each of them."""
    from lkswarm.config import RunConfig
    from lkswarm.runner import run_scenario

    try:
        credentials = Credentials.from_env(api_key, api_secret)
        config = RunConfig(
            url=url,
            rooms=rooms,
            participants=participants,
            rate=rate,
            arrival=arrival,  # type: ignore[arg-type]
            duration_s=duration,  # type: ignore[arg-type]
            signal_only=signal_only,
            audio_publishers=audio_publishers,
            video_publishers=video_publishers,
            simulcast=simulcast,
            talk_spurts=talk_spurts,
            json_frames=json_frames,
            resume_on_disconnect=resume_on_disconnect,
            seed=seed,
            verify_rooms=verify_rooms,
        )
    except ValidationError as exc:
        raise fail(f"invalid option: {_first_error(exc)}", 2) from None
    except LkswarmError as exc:
        raise fail(str(exc), 2) from None

    def announce(local: LocalServer) -> None:
        if not quiet:
            stdout.print(f"started embedded livekit-server at {local.url}")

    try:
        report = run_scenario(config, credentials, on_server=announce, csv_dir=csv_dir)
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
    if not quiet:
        print_report(report)
    outcomes = report["participants"]["outcomes"]
    if outcomes["failed"] or outcomes["not_started"]:
        raise typer.Exit(1)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(x) for x in error["loc"])
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


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
    g = report["generator"]
    stdout.print(
        f"generator: cpu {g['cpu_s']:.2f} s, max rss {g['max_rss_mb']:.0f} MB, "
        f"loop lag p99 {g['loop_lag_ms']['p99']:.1f} ms, late starts {g['late_starts']}"
    )
    if report["signal"]["server_version"]:
        stdout.print(f"server version {report['signal']['server_version']}")
    for note in report["notes"]:
        stdout.print(f"[yellow]note:[/] {note}", highlight=False)
    for warning in report["warnings"]:
        stdout.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def main() -> None:
    """Entry point of the ``lkswarm`` script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except LkswarmError as exc:  # anything a command did not turn into a message itself
        stderr.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
