"""The ``lkswarm`` command line."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from lkswarm import __version__
from lkswarm.app.server import DEFAULT_PORT, DEFAULT_UDP_PORT, LocalServer
from lkswarm.auth import Credentials
from lkswarm.cli.capacity_command import register as register_capacity_command
from lkswarm.cli.options import (
    ApiKey,
    ApiSecret,
    ArrivalOpt,
    AudioPublishersOpt,
    CaFileOpt,
    ChurnRateOpt,
    CsvDirOpt,
    DataBurstEveryOpt,
    DataBurstOpt,
    DataChannelOpt,
    DataPublishersOpt,
    DataRateOpt,
    DataSizeOpt,
    DataSlowEveryOpt,
    DataSlowPauseOpt,
    DataSlowReadersOpt,
    DataToOpt,
    DataTopicOpt,
    DataTrackRateOpt,
    DataTrackSizeOpt,
    DataTracksOpt,
    DurationOpt,
    HtmlPathOpt,
    IHavePermissionOpt,
    InsecureOpt,
    JoinRequestCompressionOpt,
    JsonFramesOpt,
    JsonPathOpt,
    LayoutOpt,
    MaxFrameBytesOpt,
    ParticipantsOpt,
    PresetOpt,
    ProbeFractionOpt,
    ProbeImpairOpt,
    ProbesOpt,
    PrometheusOpt,
    QuietOpt,
    RateOpt,
    RayOpt,
    ReconnectStormAtOpt,
    ReconnectStormModeOpt,
    ReconnectStormWindowOpt,
    ResumeOnDisconnectOpt,
    RoomOpt,
    RoomsOpt,
    RpcEchoOpt,
    ScenarioOpt,
    SeedOpt,
    ServerMetricsOpt,
    SignalOnlyOpt,
    SignalPathOpt,
    SimulateSpeakersOpt,
    SimulcastOpt,
    ThresholdOpt,
    UrlOpt,
    VerifyRoomsOpt,
    VideoCodecOpt,
    VideoPublishersOpt,
    WorkersOpt,
    WorkersPerNodeOpt,
    publishers_value,
)
from lkswarm.cli.output import (
    combined_live_view,
    exit_code,
    fail,
    failure_line,
    print_report,
    stderr,
    stdout,
    unfold_help,
)
from lkswarm.cli.reports import announce_outputs, write_outputs
from lkswarm.cli.reports import register as register_report_commands
from lkswarm.errors import ConfigError, LkswarmError, PortInUseError
from lkswarm.fields import FieldError

if TYPE_CHECKING:
    from lkswarm.app.scenario import Scenario
    from lkswarm.config import RunConfig

app = typer.Typer(
    help="Load generator and signaling benchmark for LiveKit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


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
    port: Annotated[int, typer.Option(help="Signaling (HTTP/WebSocket) port.", min=1, max=65535)] = DEFAULT_PORT,
    udp_port: Annotated[int, typer.Option(help="Single UDP port for media.", min=1, max=65535)] = DEFAULT_UDP_PORT,
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
    except PortInUseError as exc:  # the user's choice of port: a usage error, as a taken --prometheus port is
        raise fail(str(exc), 2) from None
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    # Ctrl-C and SIGTERM only note the signal: the loop below then stops the server cleanly. Not an Event's
    # set(): a handler runs in the main thread between bytecodes, and one that came while `Event.wait` held the
    # event's (non-reentrant) lock deadlocked the process, which then never exited.
    signals: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _frame: signals.append(signum))
    stdout.print(f"livekit-server ready at [bold]{local.url}[/] (UDP {local.udp_port}, pid {local.pid})")
    stdout.print(f"API key: {credentials.api_key}")
    stdout.print(f"Prometheus metrics: {local.metrics_url} (give it to `run --server-metrics` for the server's view)")
    if show_secret:
        stdout.print(f"API secret: {credentials.api_secret}")
    stdout.print("Press Ctrl-C to stop.")
    try:
        while not signals:
            time.sleep(0.5)  # a signal's handler runs within it; the sleep then ends its half second
            if signals:
                break
            if not local.running():
                tail = local.log_tail()  # before stop() removes the log
                local.stop()
                raise fail(f"livekit-server exited unexpectedly: {tail}")
    finally:
        local.stop()
    stdout.print("livekit-server stopped.")


# `run`'s options that set RunConfig keys, in the order of --help; a scenario's keys sit under them.
_CONFIG_OPTIONS = (
    "url", "rooms", "room", "participants", "audio_publishers", "video_publishers", "data_publishers", "data_rate",
    "data_size", "data_channel", "data_topic", "data_to",
    "data_burst", "data_burst_every", "data_slow_readers", "data_slow_pause", "data_slow_every", "data_tracks",
    "data_track_rate", "data_track_size", "rpc_echo", "rate", "arrival", "duration", "churn_rate",
    "reconnect_storm_at", "reconnect_storm_mode", "reconnect_storm_window", "probes", "probe_fraction",
    "probe_impair", "video_codec", "simulcast", "layout", "resume_on_disconnect", "verify_rooms", "seed",
    "signal_only", "simulate_speakers", "json_frames", "signal_path", "join_request_compression",
    "max_frame_bytes", "insecure", "ca_file", "server_metrics",
)  # fmt: skip
_OPTION_KEYS = {  # where an option's name is not its RunConfig key
    "duration": "duration_s",
    "reconnect_storm_at": "reconnect_storm_at_s",
    "reconnect_storm_window": "reconnect_storm_window_s",
    "data_burst_every": "data_burst_every_s",
    "data_slow_pause": "data_slow_pause_s",
    "data_slow_every": "data_slow_every_s",
    "simulate_speakers": "talk_spurts",
}
_PUBLISHER_OPTIONS = frozenset({"audio_publishers", "video_publishers", "data_publishers"})  # N or 'all'
_SWITCHES = frozenset({"signal_only", "simulate_speakers", "json_frames", "insecure", "rpc_echo"})  # off: not given


def _named_as_given(exc: FieldError, flags: dict[str, Any]) -> str:
    """A field's error named as the user gave it: ``--max-frame-bytes: …`` for a flag, the key for a scenario's."""
    from lkswarm.app.scenario import first_error

    key = str(exc.loc[0]) if len(exc.loc) == 1 else ""
    if key and flags.get(key) is not None:
        option = {config_key: name for name, config_key in _OPTION_KEYS.items()}.get(key, key)
        return f"--{option.replace('_', '-')}: {exc.msg}"
    return first_error(exc)


def config_flags(options: dict[str, Any]) -> dict[str, Any]:
    """`run`'s options as RunConfig keys, None where not given (so a scenario's value stands)."""
    flags: dict[str, Any] = {}
    for name in _CONFIG_OPTIONS:
        value = options[name]
        if name in _PUBLISHER_OPTIONS:
            value = publishers_value(value)
        elif name in _SWITCHES:
            value = value or None
        flags[_OPTION_KEYS.get(name, name)] = value
    return flags


@app.command(
    epilog=(
        "Examples:  lkswarm run --rooms 2 --participants 50 --audio-publishers 2 --duration 60s --html report.html"
        "  ·  lkswarm run --preset audio-room --participants 200  ·  lkswarm run scenario.toml --threshold "
        "'join_response.p99<500ms'"
    )
)
def run(
    scenario: ScenarioOpt = None,
    preset: PresetOpt = None,
    url: UrlOpt = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    i_have_permission: IHavePermissionOpt = False,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
    rooms: RoomsOpt = None,
    room: RoomOpt = None,
    participants: ParticipantsOpt = None,
    audio_publishers: AudioPublishersOpt = None,
    video_publishers: VideoPublishersOpt = None,
    data_publishers: DataPublishersOpt = None,
    data_rate: DataRateOpt = None,
    data_size: DataSizeOpt = None,
    data_channel: DataChannelOpt = None,
    data_topic: DataTopicOpt = None,
    data_to: DataToOpt = None,
    data_burst: DataBurstOpt = None,
    data_burst_every: DataBurstEveryOpt = None,
    data_slow_readers: DataSlowReadersOpt = None,
    data_slow_pause: DataSlowPauseOpt = None,
    data_slow_every: DataSlowEveryOpt = None,
    data_tracks: DataTracksOpt = None,
    data_track_rate: DataTrackRateOpt = None,
    data_track_size: DataTrackSizeOpt = None,
    rpc_echo: RpcEchoOpt = False,
    rate: RateOpt = None,
    arrival: ArrivalOpt = None,
    duration: DurationOpt = None,
    churn_rate: ChurnRateOpt = None,
    reconnect_storm_at: ReconnectStormAtOpt = None,
    reconnect_storm_mode: ReconnectStormModeOpt = None,
    reconnect_storm_window: ReconnectStormWindowOpt = None,
    signal_only: SignalOnlyOpt = False,
    probes: ProbesOpt = None,
    probe_fraction: ProbeFractionOpt = None,
    probe_impair: ProbeImpairOpt = None,
    video_codec: VideoCodecOpt = None,
    simulcast: SimulcastOpt = None,
    layout: LayoutOpt = None,
    simulate_speakers: SimulateSpeakersOpt = False,
    json_frames: JsonFramesOpt = False,
    signal_path: SignalPathOpt = None,
    join_request_compression: JoinRequestCompressionOpt = None,
    max_frame_bytes: MaxFrameBytesOpt = None,
    resume_on_disconnect: ResumeOnDisconnectOpt = None,
    verify_rooms: VerifyRoomsOpt = None,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    ray: RayOpt = None,
    workers_per_node: WorkersPerNodeOpt = None,
    json_path: JsonPathOpt = None,
    csv_dir: CsvDirOpt = None,
    html_path: HtmlPathOpt = None,
    threshold: ThresholdOpt = None,
    prometheus: PrometheusOpt = None,
    server_metrics: ServerMetricsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run participants against a LiveKit server and report what happened to each of them.

    Exit codes: 0 pass; 99 a threshold failed; 1 run error (without thresholds: any failure); 2 bad usage
    (an output path that cannot be written included: checked before the run); 3 an output could not be
    written at the end (the others were); 130/143/129 stopped by SIGINT/SIGTERM/SIGHUP (a first signal
    ends the run early and still writes every output; a second Ctrl-C skips the grace periods).
    """
    flags = config_flags(locals())  # first, while locals() holds the options alone
    from lkswarm.app.runner import check_cloud_guard, check_probe_network, check_url, run_scenario
    from lkswarm.app.scenario import scenario_config
    from lkswarm.app.workers import check_workers, parse_workers
    from lkswarm.cli.ray_command import check_ray_options, run_ray_with_view
    from lkswarm.engine.timeline import Observer
    from lkswarm.probe.seats import probe_count
    from lkswarm.report.thresholds import parse_thresholds

    try:
        base, config = scenario_config(scenario, preset, flags)
        config = config.pinned()  # one seed: the note before the run and the run draw the same Poisson plan
        credentials = Credentials.from_env(api_key, api_secret)
        thresholds = parse_thresholds([*base.thresholds, *(threshold or [])])
        probe_count(config)  # --probes and --probe-fraction against the run's size: a bad option, exit 2
        check_cloud_guard(config, i_have_permission)
        check_url(config)
        check_probe_network(config)
        ray_address = check_ray_options(config, ray, workers_per_node)
        worker_count = parse_workers(workers, config.rooms) if ray_address is None else 0  # 0: Ray actors
        if ray_address is None:
            check_workers(config, worker_count)
        from lkswarm.cli.reports import check_output_paths

        check_output_paths(json_path=json_path, html_path=html_path, csv_dir=csv_dir)  # before the run: exit 2
        observers: list[Observer] = []
        if prometheus is not None:
            from lkswarm.observe.prometheus import PrometheusExporter, check_bindable

            check_bindable(prometheus)  # a taken port is a usage error now, not a failed run later
            if worker_count == 1:  # with workers, the parent serves their sum there
                observers.append(PrometheusExporter(prometheus))
    except FieldError as exc:
        raise fail(f"invalid option: {_named_as_given(exc, flags)}", 2) from None
    except LkswarmError as exc:
        raise fail(str(exc), 2) from None
    if not quiet and stderr.is_terminal and worker_count == 1:
        from lkswarm.observe.live import LiveView

        observers.append(LiveView(stderr.console))

    if not quiet and workers == "auto":  # say what auto chose, above all when it chose fewer than the cores
        _say_workers_auto(worker_count, config.rooms)

    def announce(local: LocalServer) -> None:
        if not quiet:
            stdout.print(f"started embedded livekit-server at {local.url}")

    if not quiet:
        _say_what_runs(base, flags, worker_count, config)
    try:
        if ray_address is not None:
            result = run_ray_with_view(
                config,
                credentials,
                address=ray_address,
                workers=workers,
                workers_per_node=workers_per_node,
                announce=announce,
                thresholds=thresholds,
                prometheus=prometheus,
                quiet=quiet,
            )
        elif worker_count > 1:
            result = _run_workers_with_view(config, credentials, worker_count, announce, thresholds, prometheus, quiet)
        else:
            result = run_scenario(config, credentials, on_server=announce, observers=observers, thresholds=thresholds)
        outputs = write_outputs(
            result.report,
            json_path=json_path,
            html_path=html_path,
            csv_dir=csv_dir,
            track_rows=result.track_rows,
            data_rows=result.data_rows,
        )
    except ConfigError as exc:  # a usage error only the server could reveal (--signal-path v1 without /rtc/v1)
        raise fail(str(exc), 2) from None
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(_summarize_run(result.report, outputs, quiet))


def _say_what_runs(base: Scenario, flags: dict[str, Any], worker_count: int, config: RunConfig) -> None:
    """The lines before a run: its scenario, flags that replaced the scenario's stages, participants that will
    not start within the duration, its processes."""
    from lkswarm.app.scenario import stages_replaced_note
    from lkswarm.engine.plan import unstarted_note

    if base.name:
        stdout.print(f"scenario {base.name}: {base.description}", highlight=False)
    if replaced := stages_replaced_note(base, flags):
        stderr.print(f"note: {replaced}", highlight=False)
    if unstarted := unstarted_note(config):
        stderr.print(f"note: {unstarted}", highlight=False)
    if config.signal_only and (config.probes or config.probe_fraction):
        stderr.print(
            "note: --signal-only applies to the participants that are not probes: a probe always runs real media "
            "(aiortc), its PeerConnections and decoders included",
            highlight=False,
        )
    if worker_count > 1:
        stdout.print(f"{worker_count} generator processes, rooms split among them")


def _say_workers_auto(worker_count: int, rooms: int) -> None:
    stderr.print(
        f"--workers auto: {worker_count} generator process(es) (one per CPU core, {os.cpu_count() or 1}, at most "
        f"one per room, {rooms})",
        highlight=False,
        markup=False,
    )


def _summarize_run(report: dict[str, Any], outputs: Any, quiet: bool) -> int:
    """Prints the summary (or, with --quiet, one error line if the run failed) and returns the exit code."""
    code = exit_code(report)
    if not quiet:
        print_report(report)
    output_failed = announce_outputs(outputs, quiet=quiet)  # an output that failed: one error line, exit 3
    if output_failed is not None:
        return output_failed
    if quiet and (line := failure_line(report, code)) is not None:  # --quiet is "errors only", not silence
        stderr.print(f"error: {line}", highlight=False, markup=False)
    return code


def _run_workers_with_view(
    config: Any,
    credentials: Credentials,
    worker_count: int,
    announce: Callable[[LocalServer], None],
    thresholds: Any,
    prometheus: str | None,
    quiet: bool,
) -> Any:
    """``run --workers N``: the workers' merged run, with one live view of them all on a terminal."""
    from lkswarm.app.workers import run_workers

    combined_view = combined_live_view(quiet)
    if combined_view is not None:
        combined_view.open(config.duration_s)
    try:
        return run_workers(
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


@app.command(hidden=True)
def worker(job: Annotated[Path, typer.Argument(help="The job file the parent wrote.")]) -> None:
    """One generator process of `lkswarm run --workers N` (internal; see lkswarm.app.worker_job)."""
    from lkswarm.app.worker_job import run_worker_job

    raise typer.Exit(run_worker_job(job))


@app.command()
def presets() -> None:
    """List the shipped scenarios (run one with `lkswarm run --preset NAME`)."""
    from rich.table import Table

    from lkswarm.app.scenario import load_preset, load_summary, preset_names
    from lkswarm.config import RunConfig

    table = Table(title="presets (lkswarm run --preset NAME; flags override their keys)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("load")
    table.add_column("thresholds", no_wrap=True)  # a cut threshold would hide its limit: the other columns wrap
    for name in preset_names():
        scenario = load_preset(name)
        load = load_summary(RunConfig.from_mapping(scenario.fields))
        table.add_row(name, scenario.description, load, "\n".join(scenario.thresholds))
    stdout.print(table)


register_report_commands(app)
register_capacity_command(app)


# Typer ships its own copy of click's exceptions; reach them through the public BadParameter.
_CLICK_TYPES = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
_USAGE_ERROR: type[Any] = _CLICK_TYPES["UsageError"]
_CLICK_EXCEPTION: type[Any] = _CLICK_TYPES["ClickException"]


# `lk perf load-test` options a user coming from lk types, and what lkswarm has instead (an unknown option's hint).
LK_OPTIONS = {
    "--subscribers": "--participants counts everyone in a room, publishers included (lk's subscribers + publishers)",
    "--num-per-second": "--rate is the join rate (participants per second)",
    "--video-resolution": "the synthetic video is simulcast 1280x720, 640x360 and 320x180; --layout picks the layer "
    "subscribers ask for",
}


def main() -> None:
    """Entry point of the ``lkswarm`` script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    unfold_help(sys.argv)
    try:
        # Not standalone: click's usage errors come back here and get one line, not a box.
        code = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        if not exc.format_message():  # no_args_is_help: the help went out already
            sys.exit(2)
        # The subcommand's own names, not click's program name ("python -m lkswarm" under -m).
        names, ctx = [], exc.ctx
        while ctx is not None and ctx.parent is not None:
            names.append(ctx.info_name)
            ctx = ctx.parent
        command = "".join(f" {name}" for name in reversed(names))
        message = exc.format_message()
        if (lk_hint := LK_OPTIONS.get(str(getattr(exc, "option_name", "")))) is not None:
            message += f"; that is lk's option: {lk_hint}"
        stderr.print(f"[bold red]error:[/] {message} (see lkswarm{command} --help)", highlight=False)
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
