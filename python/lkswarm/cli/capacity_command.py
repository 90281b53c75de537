"""``lkswarm capacity``: how many participants of a shape the server holds within its SLOs, and what gives way first."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

import typer

from lkswarm.auth import Credentials
from lkswarm.cli.options import (
    ApiKey,
    ApiSecret,
    AudioPublishersOpt,
    CaFileOpt,
    CsvDirOpt,
    HtmlPathOpt,
    IHavePermissionOpt,
    InsecureOpt,
    JsonPathOpt,
    ParticipantsOpt,
    PresetOpt,
    PrometheusOpt,
    QuietOpt,
    RateOpt,
    RayOpt,
    RoomsOpt,
    ScenarioOpt,
    ServerMetricsOpt,
    SignalOnlyOpt,
    SignalPathOpt,
    SimulcastOpt,
    UrlOpt,
    VideoCodecOpt,
    VideoPublishersOpt,
    WorkersPerNodeOpt,
    publishers_value,
)
from lkswarm.cli.output import fail, print_capacity, stderr
from lkswarm.config import parse_duration_s
from lkswarm.errors import ConfigError, LkswarmError
from lkswarm.fields import FieldError

SEARCH = "Search"
EXIT_FOUND = 0
EXIT_NOT_FOUND = 1
EXIT_REQUIRE_FAILED = 99

GrowOpt = Annotated[
    str,
    typer.Option(
        help="What grows: subscribers (in each room), rooms (of the shape), publishers.", rich_help_panel=SEARCH
    ),
]
StartOpt = Annotated[
    int | None,
    typer.Option(
        help="First level, in participants (default: the shape's rooms x participants).", rich_help_panel=SEARCH
    ),
]
MaxOpt = Annotated[int, typer.Option("--max", help="Largest level tried, in participants.", rich_help_panel=SEARCH)]
GrowthOpt = Annotated[
    float, typer.Option(help="Bracketing: each level this many times the last.", rich_help_panel=SEARCH)
]
StepOpt = Annotated[
    int | None, typer.Option(help="Bracketing by a fixed step instead of --growth.", rich_help_panel=SEARCH)
]
WidthOpt = Annotated[
    str,
    typer.Option(
        help="Bisection stops when (first FAIL - last PASS) / last PASS is this or less.", rich_help_panel=SEARCH
    ),
]
HoldOpt = Annotated[
    str, typer.Option(help="Hold window per level; verdicts come from it alone.", rich_help_panel=SEARCH)
]
SettleOpt = Annotated[
    str,
    typer.Option(
        help="Settle time after a ramp, or 'auto' (until everyone has joined and is ACTIVE).", rich_help_panel=SEARCH
    ),
]
MaxHoldOpt = Annotated[str, typer.Option(help="An INCONCLUSIVE hold is extended up to this.", rich_help_panel=SEARCH)]
SloOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--slo",
        help="An SLO, repeatable: join_response.p95<1s, ping_rtt.p99<250ms, media.loss_ratio<1%, failed_ratio<0.5%. "
        "Default: those four (loss only when the shape publishes).",
        rich_help_panel=SEARCH,
    ),
]
ConfidenceOpt = Annotated[
    float, typer.Option(help="Confidence of each verdict's binomial bound.", rich_help_panel=SEARCH)
]
ProbeChurnOpt = Annotated[
    float,
    typer.Option(
        help="Short-lived joins per second during a hold, so join latency is sampled.", rich_help_panel=SEARCH
    ),
]
RequireOpt = Annotated[
    int | None, typer.Option(help="Exit 99 when the capacity found is below this (CI gating).", rich_help_panel=SEARCH)
]
ServerCpusOpt = Annotated[
    str | None,
    typer.Option(
        help="Hold the embedded server to this many cores (cgroup where possible); 0.5,1,2 is a core sweep.",
        rich_help_panel=SEARCH,
    ),
]
ServerCoresOpt = Annotated[
    float | None,
    typer.Option(help="Cores of the server to plan for (default: --server-cpus).", rich_help_panel=SEARCH),
]
TargetCpuOpt = Annotated[
    str,
    typer.Option(
        help="Planned CPU utilisation for the projection (livekit's node selector stops at 90%).",
        rich_help_panel=SEARCH,
    ),
]
ServerConfigOpt = Annotated[
    str | None,
    typer.Option(
        help='JSON merged into the embedded server\'s config, e.g. \'{"room": {"max_participants": 50}}\'.',
        rich_help_panel=SEARCH,
    ),
]
TimeoutOpt = Annotated[str, typer.Option(help="Bound on the whole search.", rich_help_panel=SEARCH)]
ActorsOpt = Annotated[
    str | None,
    typer.Option(
        "--workers",
        help="With --ray: the generator actors the load is spread over, rooms split among them, or 'auto'. "
        "(default: one per CPU of the cluster, at most one per room)",
        rich_help_panel=SEARCH,
    ),
]


def _spread(ray: str | None, workers: str | None, per_node: int | None, prometheus: str | None) -> dict[str, Any]:
    """``--ray``, ``--workers``, ``--workers-per-node`` as `CapacityOptions` fields (checked there)."""
    if ray is None:
        if workers is not None or per_node is not None:
            raise ConfigError("capacity --workers and --workers-per-node spread the load over Ray actors: add --ray")
        return {}
    from lkswarm.app.ray_engine import import_ray, parse_actor_count, parse_ray_address

    if prometheus is not None:
        raise ConfigError("--prometheus is not served by a search on Ray yet: leave out one of them")
    address = parse_ray_address(ray)
    import_ray()
    return {"ray": address, "workers": parse_actor_count(workers), "workers_per_node": per_node}


def _ratio(text: str, flag: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a ratio (5% or 0.05)") from None
    if not 0 < value < 1:
        raise ConfigError(f"{flag}: {text!r} must lie strictly between 0 and 100 %")
    return value


def capacity(
    scenario: ScenarioOpt = None,
    preset: PresetOpt = None,
    url: UrlOpt = None,
    api_key: ApiKey = None,
    api_secret: ApiSecret = None,
    insecure: InsecureOpt = False,
    ca_file: CaFileOpt = None,
    rooms: RoomsOpt = None,
    participants: ParticipantsOpt = None,
    audio_publishers: AudioPublishersOpt = None,
    video_publishers: VideoPublishersOpt = None,
    rate: RateOpt = None,
    signal_only: SignalOnlyOpt = False,
    simulcast: SimulcastOpt = None,
    video_codec: VideoCodecOpt = None,
    signal_path: SignalPathOpt = None,
    grow: GrowOpt = "subscribers",
    start: StartOpt = None,
    maximum: MaxOpt = 1000,
    growth: GrowthOpt = 1.5,
    step: StepOpt = None,
    width: WidthOpt = "5%",
    hold: HoldOpt = "60s",
    settle: SettleOpt = "20s",
    max_hold: MaxHoldOpt = "180s",
    slo: SloOpt = None,
    confidence: ConfidenceOpt = 0.95,
    probe_churn: ProbeChurnOpt = 1.0,
    require: RequireOpt = None,
    server_cpus: ServerCpusOpt = None,
    server_cores: ServerCoresOpt = None,
    target_cpu: TargetCpuOpt = "70%",
    server_config: ServerConfigOpt = None,
    server_metrics: ServerMetricsOpt = None,
    timeout: TimeoutOpt = "1h",
    ray: RayOpt = None,
    workers: ActorsOpt = None,
    workers_per_node: WorkersPerNodeOpt = None,
    json_path: JsonPathOpt = None,
    csv_dir: CsvDirOpt = None,
    html_path: HtmlPathOpt = None,
    prometheus: PrometheusOpt = None,
    quiet: QuietOpt = False,
    i_have_permission: IHavePermissionOpt = False,
) -> None:
    """Find how many participants of a shape the server holds within its SLOs (see README, Capacity planning).

    Each level ramps to its population, settles, then holds; every SLO gets PASS, FAIL or INCONCLUSIVE
    from a one-sided binomial bound on the hold's samples. Levels grow by --growth until one fails, then
    bisect to --width. Exit codes: 0 a capacity was found; 99 --require failed; 1 the search could not
    run (no level passed, or the server died); 2 bad usage; 3 an output could not be written;
    130/143/129 stopped by a signal (the levels measured so far are written).
    """
    from lkswarm.app.capacity_run import CapacityOptions, check_capacity_options, run_capacity, slo_specs
    from lkswarm.app.cpu_limit import parse_cpus
    from lkswarm.app.runner import check_cloud_guard, check_url
    from lkswarm.app.scenario import first_error, scenario_config
    from lkswarm.cli.reports import announce_outputs, check_output_paths, write_outputs

    flags: dict[str, Any] = {
        "url": url,
        "rooms": rooms,
        "participants": participants,
        "audio_publishers": publishers_value(audio_publishers),
        "video_publishers": publishers_value(video_publishers),
        "rate": rate,
        "signal_only": signal_only or None,
        "simulcast": simulcast,
        "video_codec": video_codec,
        "signal_path": signal_path,
        "insecure": insecure or None,
        "ca_file": ca_file,
        "server_metrics": server_metrics,
    }
    try:
        _, config = scenario_config(scenario, preset, flags)
        credentials = Credentials.from_env(api_key, api_secret)
        check_url(config)
        check_cloud_guard(config, i_have_permission, planned=maximum)  # a search may grow to --max
        extra = _server_config(server_config)
        options = CapacityOptions(
            grow=grow,
            start=start,
            maximum=maximum,
            growth=growth,
            step=step,
            width=_ratio(width, "--width"),
            hold_s=parse_duration_s(hold),
            settle_s=None if settle == "auto" else parse_duration_s(settle),
            max_hold_s=parse_duration_s(max_hold),
            slos=tuple(slo or ()),
            confidence=confidence,
            probe_churn_per_s=probe_churn,
            server_cpus=tuple(parse_cpus(server_cpus)) if server_cpus else (),
            server_cores=server_cores,
            target_cpu=_ratio(target_cpu, "--target-cpu"),
            timeout_s=parse_duration_s(timeout),
            extra_server_config=extra,
            **_spread(ray, workers, workers_per_node, prometheus),
        )
        if not 0.5 <= confidence < 1:
            raise ConfigError(f"--confidence {confidence:g} must lie in [0.5, 1)")
        if require is not None and require < 1:
            raise ConfigError(f"--require {require} must be at least 1 participant")
        check_capacity_options(options, config)
        specs, slo_notes = slo_specs(options, config)
        slo_order = [spec["key"] for spec in specs]
        check_output_paths(json_path=json_path, html_path=html_path, csv_dir=csv_dir)
        exporter = None
        if prometheus is not None:
            from lkswarm.observe.prometheus import PrometheusExporter, check_bindable

            check_bindable(prometheus)
            exporter = PrometheusExporter(prometheus)
    except FieldError as exc:
        raise fail(f"invalid option: {first_error(exc)}", 2) from None
    except (LkswarmError, ValueError) as exc:
        raise fail(str(exc), 2) from None

    if not quiet:  # before a search of many minutes: what it cannot judge, and why (also in the report's notes)
        for note in slo_notes:
            stderr.print(f"note: {note}", highlight=False)
    progress = SearchProgress(quiet, exporter, slo_order)
    try:
        result = run_capacity(
            config,
            credentials,
            options,
            observers=[exporter] if exporter is not None else None,
            on_level=progress.on_level,
            on_level_start=progress.on_level_start,
            on_server=progress.on_server,
        )
    except ConfigError as exc:  # a usage error only the cluster could reveal (too few CPUs for --workers)
        raise fail(str(exc), 2) from None
    except LkswarmError as exc:
        raise fail(str(exc)) from None
    report = result.report
    outputs = write_outputs(report, json_path=json_path, html_path=html_path, csv_dir=csv_dir)
    if not quiet:
        print_capacity(report)
    if error := (report["capacity"].get("search") or {}).get("error"):
        stderr.print(f"error: the capacity search stopped early: {error}", highlight=False, markup=False)
    output_failed = announce_outputs(outputs, quiet=quiet)
    raise typer.Exit(output_failed if output_failed is not None else capacity_exit_code(report, require))


def _server_config(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--server-config is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(extra, dict):
        raise ConfigError("--server-config must be a JSON object")
    return extra


class SearchProgress:
    """What a search shows while it runs: a line per level on stderr, and the level gauges of --prometheus."""

    VERDICT_CODES: ClassVar[dict[str, int]] = {"PASS": 1, "FAIL": 0, "INCONCLUSIVE": -1}

    def __init__(self, quiet: bool, exporter: Any, slo_order: list[str] | None = None) -> None:
        self.quiet = quiet
        self.exporter = exporter
        self.slo_order = slo_order or []  # the SLO keys as given: the level lines' order, as the table's

    def on_level_start(self, planned: Any) -> None:
        if self.exporter is not None:
            self.exporter.gauges["lkswarm_capacity_level"] = (
                "Participants of the capacity level being measured.",
                [("", planned.participants)],
            )
        if not self.quiet:
            stderr.print(f"level: {planned.participants} participants ({planned.phase})", highlight=False)

    def on_level(self, level: Any) -> None:
        if self.exporter is not None:
            self.exporter.gauges["lkswarm_capacity_verdict"] = (
                "The last level's verdict per SLO: 1 PASS, 0 FAIL, -1 INCONCLUSIVE.",
                [
                    (f'{{slo="{key}"}}', self.VERDICT_CODES[result["verdict"]])
                    for key, result in sorted(level["slos"].items())
                ],
            )
            self.exporter.gauges["lkswarm_capacity_levels_measured"] = (
                "Capacity levels measured so far.",
                [("", level["index"] + 1)],
            )
        if self.quiet:
            return
        from lkswarm.report.capacity_text import level_slo_text

        figures = level["client"]
        keys = self.slo_order + [key for key in level["slos"] if key not in self.slo_order]
        # The SLOs this search is judged on, each with its value at this level (a FAIL marked), not fixed columns.
        stderr.print(
            f"level {level['index']} ({level['phase']}{', fresh' if level['fresh'] else ''}): "
            f"{level['participants']} participants -> {level['verdict']}"
            f"{': ' + level['reason'] if level['reason'] else ''}  "
            f"({level_slo_text(level, keys)}; {figures['joined']} joins in the hold, "
            f"{figures['failed']} of {figures['attempted']} attempted failed)",
            highlight=False,
        )

    def on_server(self, local: Any, limit: Any) -> None:
        if not self.quiet:
            held = f", held to {limit.cpus:g} cores by {limit.method}" if limit is not None else ""
            stderr.print(f"started embedded livekit-server at {local.url}{held}", highlight=False)


def capacity_exit_code(report: dict[str, Any], require: int | None) -> int:
    """0 found, 99 below --require, 1 no level passed, the server died or the search stopped on an error,
    128 + N stopped by signal N."""
    from lkswarm.cli.output import exit_code

    if report.get("interrupted"):
        return exit_code(report)
    section = report["capacity"]
    if section["value"] is None or section["limiting"] == "aborted" or (section.get("search") or {}).get("error"):
        return EXIT_NOT_FOUND
    if require is not None and section["value"] < require:
        return EXIT_REQUIRE_FAILED
    return EXIT_FOUND


def register(app: typer.Typer) -> None:
    app.command(
        epilog=(
            "Examples:  lkswarm capacity --audio-publishers 2 --participants 10 --max 500 --html cap.html"
            "  ·  lkswarm capacity --server-cpus 0.5 --hold 30s --slo 'join_response.p95<500ms'"
        )
    )(capacity)
