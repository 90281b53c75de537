"""Runs a capacity search end to end: the server (embedded, CPU-limited, or ``--url``), the engine, the report.

The engine runs under `run_until_stopped`, so the first SIGINT, SIGTERM or SIGHUP
ends the search as its last level would: the levels measured so far are
analysed and every output is written; the report says it was interrupted.
A core sweep (``--server-cpus 0.5,1,2``) is one search per limit, each on a
fresh embedded server, and the report's ``capacity.sweep`` holds their results.

The load is one open-plan engine in this process (`lkswarm.app.capacity_port.EnginePort`)
or, with ``ray`` set, one per Ray actor (`lkswarm.app.ray_capacity`); the controller,
the server, the scrapes and the analysis are the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import uvloop

from lkswarm.app.capacity import AUTO_SETTLE_MIN_S, Controller, LevelTiming, Shape, churn_min_age_s, engine_config
from lkswarm.app.capacity_port import EnginePort, LoadPort
from lkswarm.app.cpu_limit import CpuLimit, limit_cpu
from lkswarm.app.runner import build_engine, resolve_url, run_until_stopped
from lkswarm.app.server import LocalServer
from lkswarm.app.server_watch import ServerWatch
from lkswarm.auth import Credentials
from lkswarm.capacity.analysis import analyse, sweep_summary
from lkswarm.capacity.schema import CapacitySection, SloSpec
from lkswarm.capacity.search import Search
from lkswarm.capacity.slo import is_ratio_key, min_samples, parse_slo, percentile_of, phase_of
from lkswarm.config import RunConfig
from lkswarm.engine.timeline import Observer
from lkswarm.errors import ConfigError, one_line
from lkswarm.report.build import GENERATOR_WARNING_PREFIXES, LATENESS_ADVICE, SPREAD_ADVICE, build_report
from lkswarm.report.capacity_text import summary_paragraph
from lkswarm.report.schema import as_json
from lkswarm.signal.session import DEFAULT_PING_INTERVAL_S

MEDIA_SLOS = ("media.loss_ratio",)
# Phases a hold samples once per join: its churn's joins.
JOIN_PHASES = ("ws_connect", "join_response", "offer_answer", "active")


@dataclass(frozen=True, slots=True)
class CapacityOptions:
    """What `lkswarm capacity` was asked for, beyond the shape (a `RunConfig`)."""

    grow: str = "subscribers"
    start: int | None = None
    maximum: int = 1000
    growth: float | None = 1.5
    step: int | None = None
    width: float = 0.05
    hold_s: float = 60.0
    settle_s: float | None = 20.0  # None: auto
    max_hold_s: float = 180.0
    slos: tuple[str, ...] = ()
    confidence: float = 0.95
    probe_churn_per_s: float = 1.0
    max_probes: int = 6
    server_cpus: tuple[float, ...] = ()
    server_cores: float | None = None  # cores of the server to plan for (default: the limit, or this machine's)
    target_cpu: float = 0.7
    timeout_s: float = 3600.0
    extra_server_config: dict[str, Any] = field(default_factory=dict)
    ray: str | None = None  # a Ray address (local, auto, ray://...): the load on Ray actors
    workers: int | None = None  # with ray: the number of actors (None: one per CPU of the cluster)
    workers_per_node: int | None = None  # with ray: at most this many actors on one node


@dataclass(slots=True)
class CapacityResult:
    report: dict[str, Any]
    section: CapacitySection


def shape_of(config: RunConfig, grow: str) -> Shape:
    if grow not in ("subscribers", "rooms", "publishers"):
        raise ConfigError(f"--grow must be subscribers, rooms or publishers, not {grow!r}")
    publishers = config.audio_publishers + config.video_publishers
    return Shape(grow, config.rooms, config.participants, publishers)  # type: ignore[arg-type]


def slo_specs(options: CapacityOptions, config: RunConfig) -> tuple[list[SloSpec], list[str]]:
    """The SLOs to judge, and notes on defaults left out (loss without media, say)."""
    from lkswarm.capacity.slo import DEFAULT_SLOS

    notes: list[str] = []
    texts = list(options.slos) or list(DEFAULT_SLOS)
    specs = [parse_slo(text) for text in texts]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec["key"] in seen:
            given = seen[spec["key"]]
            raise ConfigError(f"--slo {spec['text']}: {spec['key']} is judged once; it was given as {given}")
        seen[spec["key"]] = spec["text"]
    if config.signal_only or (config.audio_publishers + config.video_publishers) == 0:
        dropped = [s["text"] for s in specs if s["key"] in MEDIA_SLOS]
        if dropped and not options.slos:
            notes.append(f"{', '.join(dropped)} left out: this shape publishes no media")
            specs = [s for s in specs if s["key"] not in MEDIA_SLOS]
        elif dropped:
            raise ConfigError(f"--slo {dropped[0]}: this shape publishes no media (add --audio-publishers)")
    start = options.start if options.start is not None else config.total_participants
    notes += sample_shortfalls(specs, start, options, config.rate)
    return specs, notes


def search_wide(warning: str, on_ray: bool) -> str:
    """A run's generator warning as a search's: it covers the whole search (ramps and teardowns too), while
    each level was judged by its hold's own guard (``capacity.levels[].generator``); and a search spreads its
    load over more processes only on Ray (``--ray``, then more actors with ``--workers``)."""
    if not warning.startswith(GENERATOR_WARNING_PREFIXES):
        return warning
    for advice in (SPREAD_ADVICE, LATENESS_ADVICE):
        warning = warning.removesuffix(advice)
    spread = "give it more Ray actors (--workers) or nodes" if on_ray else "spread its load with --ray"
    return (
        f"{warning} This is over the whole search, ramps and teardowns included; each level's hold was judged by "
        f"its own guard (capacity.levels[].generator: GENERATOR_BOUND where it saturated). To give a search more "
        f"generator, {spread}."
    )


def sample_shortfalls(specs: list[SloSpec], start: int, options: CapacityOptions, rate: float) -> list[str]:
    """A note for each percentile SLO that a level of ``start`` participants cannot gather the samples for, even in
    the longest hold: its levels can only be INCONCLUSIVE (counted as FAIL), and a search starting there finds no
    capacity after many minutes. The note names the smallest first level that can (`_samples_per_hold`)."""
    notes: list[str] = []
    for spec in specs:
        key = spec["key"]
        phase = "" if is_ratio_key(key) else phase_of(key)
        if phase not in (*JOIN_PHASES, "ping_rtt"):
            continue
        needed = min_samples(1.0 - percentile_of(key) / 100.0, options.confidence)
        per_s, gathered = _samples_per_hold(phase, start, specs, options, rate)
        if gathered >= needed:
            continue
        if per_s == 0:
            notes.append(
                f"{spec['text']} has no samples: the hold makes no joins (--probe-churn 0), so it can only be "
                "INCONCLUSIVE (counted as FAIL); let the hold churn or leave this SLO out"
            )
            continue
        enough = next(
            (
                n
                for n in range(start + 1, start * 50 + 2)
                if _samples_per_hold(phase, n, specs, options, rate)[1] >= needed
            ),
            None,
        )
        source = "pings come" if phase == "ping_rtt" else "joins come from the hold's churn"
        dead_s = _joinless_start_s(phase, start, specs, options, rate)
        after = ""
        if dead_s >= 0.5:
            after = f" once a seat is old enough to replace (none in the hold's first {dead_s:.0f} s)"
        notes.append(
            f"{spec['text']} needs {needed} samples in a hold; at {start} participants {source} about "
            f"{per_s:.2g} times a second{after}: some {gathered} in the longest hold "
            f"(--max-hold {options.max_hold_s:g}s), "
            "so such levels can only be INCONCLUSIVE (counted as FAIL); "
            + (f"start at {enough} or more (--start), " if enough is not None else "")
            + "lengthen --max-hold, or judge a lower percentile"
        )
    return notes


def _samples_per_hold(
    phase: str, start: int, specs: list[SloSpec], options: CapacityOptions, rate: float
) -> tuple[float, int]:
    """How many samples of ``phase`` a fresh level of ``start`` gathers a second, and in its longest hold.

    The hold's churn replaces a seat once it has lived `churn_min_age_s` (plus up to a second for the churn's
    tick), or every ``start / churn`` s if that is longer; so in a fresh level (ramped at ``rate``, settled for
    ``--settle``, or at least 3 s with ``auto``) no join comes until its seats are that old. Every seat pings
    every ping interval (livekit-server's 5 s) of its life after the first.
    """
    churn, ping_s, min_age_s = options.probe_churn_per_s, DEFAULT_PING_INTERVAL_S, churn_min_age_s(specs)
    lifetime_s = max(min_age_s + 1.0 if min_age_s else 0.0, start / churn) if churn > 0 else math.inf
    if phase == "ping_rtt":
        per_s = start / ping_s * (1 - ping_s / lifetime_s)
        return per_s, math.floor(per_s * options.max_hold_s)
    no_joins_s = _joinless_start_s(phase, start, specs, options, rate)
    per_s = start / lifetime_s
    return per_s, math.floor(per_s * max(0.0, options.max_hold_s - no_joins_s))


def _joinless_start_s(phase: str, start: int, specs: list[SloSpec], options: CapacityOptions, rate: float) -> float:
    """How long a fresh level's hold makes no join: until its first seats are old enough for the churn."""
    if phase == "ping_rtt":
        return 0.0
    settle_s = options.settle_s if options.settle_s is not None else AUTO_SETTLE_MIN_S
    return max(0.0, churn_min_age_s(specs) - settle_s - start / rate)


def check_capacity_options(options: CapacityOptions, config: RunConfig) -> Search:
    """Validates the search's options against the shape (usage errors, before anything starts)."""
    shape = shape_of(config, options.grow)
    slo_specs(options, config)
    start = options.start if options.start is not None else config.total_participants
    granularity = shape.granularity
    if start < granularity or options.maximum < start:
        raise ConfigError(
            f"--start {start} and --max {options.maximum} must satisfy {granularity} <= start <= max "
            f"(levels are whole multiples of {granularity} when growing {options.grow})"
        )
    if options.grow != "publishers" and shape.publishers > shape.room_targets(start)[0]:
        raise ConfigError(f"--start {start} leaves fewer participants per room than the {shape.publishers} publishers")
    if options.server_cpus and resolve_url(config) is not None:
        raise ConfigError("--server-cpus limits the embedded server; leave out --url (or limit your server yourself)")
    if options.hold_s <= 0:
        # A level is judged on its hold; none at all also left the hold's extension step at 0 (it never ended).
        raise ConfigError(f"--hold must be longer than 0 s, not {options.hold_s:g}")
    if options.max_hold_s < options.hold_s:
        raise ConfigError("--max-hold must be at least --hold")
    if options.settle_s is not None and options.settle_s < 0:
        raise ConfigError(f"--settle must be auto or at least 0 s, not {options.settle_s:g}")
    if options.timeout_s <= 0:
        raise ConfigError(f"--timeout must be longer than 0 s, not {options.timeout_s:g}")
    if not (math.isfinite(options.probe_churn_per_s) and options.probe_churn_per_s >= 0):
        raise ConfigError(f"--probe-churn must be at least 0 joins/s, not {options.probe_churn_per_s:g}")
    _check_spread(options, config)
    return Search(
        start,
        options.maximum,
        growth=options.growth if options.step is None else None,
        step=options.step,
        width=options.width,
        max_probes=options.max_probes,
        granularity=granularity,
    )


def _check_spread(options: CapacityOptions, config: RunConfig) -> None:
    """``--ray``, ``--workers`` and ``--workers-per-node`` of a search (usage errors)."""
    if options.ray is None:
        if options.workers is not None or options.workers_per_node is not None:
            raise ConfigError(
                "capacity --workers and --workers-per-node spread the load over Ray actors: add --ray local "
                "(or auto, or ray://HOST:10001)"
            )
        return
    from lkswarm.app.ray_engine import check_ray_run

    check_ray_run(config, options.ray)
    if options.workers is not None and options.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if options.workers_per_node is not None and options.workers_per_node < 1:
        raise ConfigError("--workers-per-node must be at least 1")
    rooms = shape_of(config, options.grow).rooms
    if options.grow != "rooms" and options.workers is not None and options.workers > rooms:
        raise ConfigError(
            f"--workers {options.workers}: the search's rooms are split among the actors, so it needs at least "
            f"as many rooms as actors (it has {rooms}; add --rooms)"
        )


def run_capacity(
    config: RunConfig,
    credentials: Credentials,
    options: CapacityOptions,
    *,
    observers: list[Observer] | None = None,
    on_level: Any = None,
    on_level_start: Any = None,
    on_server: Any = None,
) -> CapacityResult:
    """The whole search (a core sweep: one per ``server_cpus`` value); the first one's report carries the rest."""
    limits: list[float | None] = list(options.server_cpus) or [None]
    results = [
        _one_search(
            config,
            credentials,
            options,
            cpus,
            observers=observers,
            on_level=on_level,
            on_level_start=on_level_start,
            on_server=on_server,
        )
        for cpus in limits[:1]
    ]
    if results[0].report.get("interrupted") is None:
        for cpus in limits[1:]:
            results.append(
                _one_search(
                    config,
                    credentials,
                    options,
                    cpus,
                    on_level=on_level,
                    on_level_start=on_level_start,
                    on_server=on_server,
                )
            )
            if results[-1].report.get("interrupted") is not None:
                break
    main = results[0]
    if len(limits) > 1:
        main.section["sweep"] = sweep_summary([r.section for r in results])  # type: ignore[typeddict-unknown-key]
        main.report["capacity"] = main.section
    return main


def _one_search(
    config: RunConfig,
    credentials: Credentials,
    options: CapacityOptions,
    cpus: float | None,
    *,
    observers: list[Observer] | None = None,
    on_level: Any = None,
    on_level_start: Any = None,
    on_server: Any = None,
) -> CapacityResult:
    search = check_capacity_options(options, config)
    shape = shape_of(config, options.grow)
    specs, notes = slo_specs(options, config)
    config = config.pinned()
    url = resolve_url(config)
    if cpus is not None and url is not None:
        raise ConfigError("--server-cpus limits the embedded server; leave out --url (or limit your server yourself)")
    local: LocalServer | None = None
    limit: CpuLimit | None = None
    try:
        if url is None:
            local = LocalServer(credentials, extra_config=options.extra_server_config)
            local.start()
            url = local.url
            if cpus is not None and local.pid is not None:
                limit = limit_cpu(local.pid, cpus)
            if on_server is not None:
                on_server(local, limit)
        run_config = engine_config(config, shape, options.maximum, options.timeout_s)
        watch = ServerWatch(config, local)  # the server's counters around the search; its metrics URL for the levels
        timing = LevelTiming(
            config.rate,
            options.settle_s,
            options.hold_s,
            options.max_hold_s,
            options.probe_churn_per_s,
            options.confidence,
            churn_min_age_s(specs),
            config.join_timeout_s,
        )
        server = local

        def controller_for(port: LoadPort) -> Controller:
            return Controller(
                port,
                run_config.rooms,
                shape,
                specs,
                timing,
                metrics_url=watch.metrics_url,
                server_pid=lambda: server.pid if server is not None else None,
                server_alive=lambda: server is None or server.running(),
                on_level=on_level or (lambda level: None),
                on_level_start=on_level_start or (lambda planned: None),
            )

        watch.start()
        started = time.perf_counter()
        error: str | None = None
        if options.ray is None:
            engine = build_engine(run_config, credentials, url, observers, open_plan=True)
            controller = controller_for(EnginePort(engine))
            record, error = uvloop.run(_drive(engine, controller, search))
        else:
            from lkswarm.app.ray_capacity import search_on_ray

            spread = (options.ray, options.workers, options.workers_per_node)
            merged, controller, error = search_on_ray(run_config, credentials, url, controller_for, search, spread)
        wall_s = time.perf_counter() - started
        watch.stop()
        if options.ray is None:
            report = as_json(build_report(record, watch.use, server_metrics=watch.section()))
        else:
            report = merged
            report["server"] = watch.section()
        on_ray = options.ray is not None
        report["warnings"] = [search_wide(warning, on_ray) for warning in report.get("warnings", [])]
    finally:
        try:  # the CPU limit first: a SIGSTOP duty cycle would stall the server's drain (and its SIGTERM)
            if limit is not None:
                limit.release()
        finally:  # and a second Ctrl-C in one still stops the other
            if local is not None:
                local.stop()
    report["target"] = {"url": url, "embedded_server": local is not None}
    section = analyse(
        controller.levels,
        search,
        specs,
        shape_description=_shape_dict(config, shape),
        options=_search_dict(options, wall_s),
        server_limit=limit.describe() if limit is not None else {},
        server_cores=options.server_cores or cpus,
        target_cpu=options.target_cpu,
        grow=options.grow,
        confidence=options.confidence,
        notes=notes,
    )
    if error is not None:
        section["search"]["error"] = error
    section["summary"] = summary_paragraph(section)
    report["capacity"] = section
    return CapacityResult(report, section)


async def _drive(engine: Any, controller: Controller, search: Search) -> tuple[Any, str | None]:
    """Runs the engine and the controller together: the engine's record once the search (or a signal) ends,
    and the controller's error in one line if it failed.

    A failing controller (a bug, or a port that broke) stops the search, not the run: the engine finishes
    as at a normal end, the levels measured so far are analysed and every output is written, with the
    error in the report and on the console, and a non-zero exit. A 30-minute search keeps what it measured."""
    engine_task = asyncio.get_running_loop().create_task(run_until_stopped(engine))
    control_task = asyncio.get_running_loop().create_task(controller.run(search))
    done, _ = await asyncio.wait({engine_task, control_task}, return_when=asyncio.FIRST_COMPLETED)
    error: str | None = None
    if control_task in done:
        failure = control_task.exception()
        if failure is not None:
            error = one_line(failure)
            search.stop_on_error()
        engine.finish()
    else:  # the run ended first: a stop signal, or the search's time bound (--timeout)
        control_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await control_task
        if not search.done:
            search.stop_early()
            if engine.interrupted is None:
                error = "its time bound (--timeout) ran out before it finished"
    return await engine_task, error


def _shape_dict(config: RunConfig, shape: Shape) -> dict[str, object]:
    return {
        "rooms": shape.rooms,
        "participants_per_room": shape.per_room,
        "publishers_per_room": shape.publishers,
        "audio_publishers": config.audio_publishers,
        "video_publishers": config.video_publishers,
        "simulcast": config.simulcast,
        "signal_only": config.signal_only,
        "rate": config.rate,
    }


def _search_dict(options: CapacityOptions, wall_s: float) -> dict[str, object]:
    return {
        "start": options.start,
        "max": options.maximum,
        "growth": options.growth,
        "step": options.step,
        "width": options.width,
        "hold_s": options.hold_s,
        "settle_s": "auto" if options.settle_s is None else options.settle_s,
        "max_hold_s": options.max_hold_s,
        "probe_churn_per_s": options.probe_churn_per_s,
        "wall_s": round(wall_s, 1),
    }
