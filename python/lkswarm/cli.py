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
import uvloop
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
stderr = Console(stderr=True)
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
        local.start()
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    stdout.print(f"livekit-server ready at [bold]{local.url}[/] (UDP {local.udp_port}, pid {local.pid})")
    stdout.print(f"API key: {credentials.api_key}")
    if show_secret:
        stdout.print(f"API secret: {credentials.api_secret}")
    stdout.print("Press Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if not local.running():
                local.stop()
                raise fail(f"livekit-server exited unexpectedly: {local.log_tail()}")
    except KeyboardInterrupt:
        pass
    finally:
        local.stop()
    stdout.print("livekit-server stopped.")


@app.command()
def run(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="LIVEKIT_URL",
            show_envvar=True,
            help="Server URL; without it an embedded local server runs.",
        ),
    ] = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    participants: Annotated[int, typer.Option(min=1, help="Participants in total.")] = 10,
    rooms: Annotated[int, typer.Option(min=1, help="Rooms to spread them over.")] = 1,
    rate: Annotated[float, typer.Option(min=0.1, help="Joins started per second.")] = 20.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON here.")] = None,
    quiet: Annotated[bool, typer.Option(help="Print only errors.")] = False,
) -> None:
    """Join participants to a LiveKit server and report their join latencies."""
    from lkswarm.smoke import run_joins, summarize

    try:
        credentials = Credentials.from_env(api_key, api_secret)
        local: LocalServer | None = None
        if url is None:
            local = LocalServer(credentials)
            local.start()
            url = local.url
            if not quiet:
                stdout.print(f"started embedded livekit-server at {url}")
        try:
            results = uvloop.run(run_joins(url, credentials, participants=participants, rooms=rooms, rate_per_s=rate))
        finally:
            if local is not None:
                local.stop()
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    summary = summarize(results)
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2))
    if not quiet:
        print_summary(summary)
    if summary["joined"] != summary["scheduled"]:
        raise typer.Exit(1)


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"lkswarm: {summary['joined']}/{summary['scheduled']} joined")
    for column in ("phase", "count", "min", "p50", "p90", "p99", "max"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    stats = summary.get("join_response_ms")
    if stats:
        table.add_row(
            "join_response (ms)",
            str(stats["count"]),
            *(f"{stats[k]:.1f}" for k in ("min", "p50", "p90", "p99", "max")),
        )
    stdout.print(table)
    if summary["server_version"]:
        stdout.print(f"server version {summary['server_version']}")
    for reason, count in summary["failures"].items():
        stdout.print(f"[red]failed:{reason}[/] {count}")


def main() -> None:
    """Entry point of the ``lkswarm`` script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except LkswarmError as exc:  # anything a command did not turn into a message itself
        stderr.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
