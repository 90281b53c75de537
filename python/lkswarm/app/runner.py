"""Runs a scenario end to end: the embedded server when no URL is given, the engine, the report."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from lkswarm.app.server import LocalServer
from lkswarm.app.server_watch import ServerWatch
from lkswarm.auth import Credentials, mint_token
from lkswarm.config import RunConfig
from lkswarm.engine.context import Run
from lkswarm.engine.engine import Engine
from lkswarm.engine.plan import build_plan, worker_plan
from lkswarm.engine.ports import MediaTier
from lkswarm.engine.record import RunRecord
from lkswarm.engine.timeline import Observer
from lkswarm.errors import ConfigError
from lkswarm.impairment import ImpairmentError, parse_impairment
from lkswarm.media.tier import LightTier
from lkswarm.media.totals import MediaTotals
from lkswarm.metrics import udp_receive_buffer_errors
from lkswarm.net.twirp import http_base, open_direct
from lkswarm.net.ws_driver import Endpoint, tls_context
from lkswarm.probe.netns import ProbeNetwork, unsupported_reason
from lkswarm.probe.seats import probe_count, probe_seats
from lkswarm.probe.tier import ProbeTier
from lkswarm.report.build import build_report
from lkswarm.report.schema import as_json
from lkswarm.report.thresholds import Threshold, evaluate
from lkswarm.signal.join_request import join_request_mapping, validate_v1_path, wrap_join_request

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CLOUD_SUFFIX = ".livekit.cloud"
CLOUD_MAX_PARTICIPANTS = 50


@dataclass(slots=True)
class RunResult:
    report: dict[str, Any]
    track_rows: list[dict[str, Any]] = field(default_factory=list)
    data_rows: list[dict[str, Any]] = field(default_factory=list)  # data.csv: (receiver, sender, channel)


def resolve_url(config: RunConfig) -> str | None:
    """``--url`` wins, then ``LIVEKIT_URL``; None means the embedded server."""
    return config.url or os.environ.get("LIVEKIT_URL") or None


def check_cloud_guard(config: RunConfig, permitted: bool, planned: int | None = None) -> None:
    """Refuses big runs against LiveKit Cloud without an explicit --i-have-permission, as ``lk`` does.

    ``planned``: the most participants the command may start (a capacity search's ``--max``); else the plan's."""
    url = resolve_url(config)
    if url is None or permitted:
        return
    host = urllib.parse.urlsplit(url if "://" in url else f"wss://{url}").hostname or ""
    if not host.endswith(CLOUD_SUFFIX):
        return
    if planned is None:
        planned = len(build_plan(config))
    if planned > CLOUD_MAX_PARTICIPANTS:
        raise ConfigError(
            f"refusing to run {planned} participants against {host}: load tests on LiveKit Cloud above "
            f"{CLOUD_MAX_PARTICIPANTS} participants need LiveKit's permission (their terms forbid unannounced load, "
            "and lk perf load-test refuses too). If you have it, add --i-have-permission."
        )


def check_url(config: RunConfig) -> None:
    """Refuses (before the run, as a usage error) a server URL that is not one."""
    url = resolve_url(config)
    if url is not None:
        Endpoint.parse(url)  # raises ConfigError naming what is wrong


PREFLIGHT_TIMEOUT_S = 3.0  # /rtc/v1/validate's answer (a live server answers in milliseconds)


def check_signal_path(config: RunConfig, credentials: Credentials, url: str) -> None:
    """``--signal-path v1`` (alone or in a mix) against a server without ``/rtc/v1``: one line before the run.

    Asks ``/rtc/v1/validate``, which checks a token and a join request and creates no participant. Only a 404
    stops the run (the path is missing, as before livekit-server v1.9); any other refusal, or no answer, is
    left to the participants, whose outcomes then carry it. ``auto`` needs no check: it falls back.
    """
    if "v1" not in dict(config.signal_path_weights):
        return
    # urllib brings http.client and email (about 10 ms of start-up): imported when first used.
    import urllib.error

    token = mint_token(credentials, identity=f"{config.identity_prefix}-preflight", room=config.room_name(0))
    request = wrap_join_request(join_request_mapping(auto_subscribe=config.auto_subscribe, protocol=config.protocol))
    target = http_base(url) + validate_v1_path(token, request)
    tls = tls_context(insecure=config.insecure, ca_file=config.ca_file) if target.startswith("https:") else None
    try:
        # A join token is in the URL: never through a proxy. No answer in 3 s goes on to the run (a hung server
        # is the participants' to report), rather than holding a run that prints nothing for longer.
        with open_direct(target, PREFLIGHT_TIMEOUT_S, tls):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ConfigError(
                f"{url} has no /rtc/v1 (HTTP 404 on /rtc/v1/validate: a livekit-server without single-PC "
                "signaling); use --signal-path auto or v0"
            ) from None
    except (OSError, ValueError):
        return  # unreachable: every participant's outcome will say so


def check_probe_network(config: RunConfig) -> None:
    """Refuses ``probe_impair`` (before the run, as a usage error) where it cannot work."""
    if config.probe_impair is None:
        return
    if not probe_count(config):
        raise ConfigError("--probe-impair impairs the probes' network, but this run has no probes (--probes N)")
    if resolve_url(config) is not None:
        raise ConfigError(
            "--probe-impair needs the embedded server (leave out --url): the server must be started after the "
            "probes' network namespace exists, so that it listens on the namespace's gateway address"
        )
    reason = unsupported_reason(parse_impairment(config.probe_impair))
    if reason is not None:
        raise ImpairmentError(f"--probe-impair: {reason}")


def open_probe_network(config: RunConfig) -> ProbeNetwork | None:
    """The probes' impaired namespace when ``probe_impair`` is set (see lkswarm.probe.netns); None otherwise."""
    if config.probe_impair is None:
        return None
    check_probe_network(config)
    network = ProbeNetwork(parse_impairment(config.probe_impair), probe_count(config))
    network.open()
    return network


def build_engine(
    config: RunConfig,
    credentials: Credentials,
    url: str,
    observers: list[Observer] | None = None,
    *,
    probe_network: ProbeNetwork | None = None,
    worker: tuple[int, int] = (0, 1),
    start_gate: Callable[[], Awaitable[float]] | None = None,
    open_plan: bool = False,
) -> Engine:
    """The engine of one generator process, with its tiers built and injected (probes claim their seats first).

    ``open_plan``: the plan starts empty and its owner adds arrivals as it goes (``lkswarm capacity``)."""
    run = Run(config, credentials, url)
    tiers: list[MediaTier] = []
    index, count = worker
    if not open_plan and probe_count(config) > 0 and any(room % count == index for room, _ in probe_seats(config)):
        tiers.append(ProbeTier(run, worker_plan(config, worker), worker, probe_network))
    if not config.signal_only:
        tiers.append(LightTier(run))
    return Engine(run, tiers, observers, worker=worker, start_gate=start_gate, open_plan=open_plan)


async def run_until_stopped(engine: Engine) -> RunRecord:
    """Runs ``engine``; the first SIGINT, SIGTERM or SIGHUP ends the run early as its duration would (every
    participant counted, the record returned, so the report is written), and a second SIGINT aborts the
    grace periods. The handlers are this loop's, so they never outlive the run."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if engine.interrupted is not None and signum == signal.SIGINT:
            engine.abort(signum.name)  # a second Ctrl-C: out at once, still with the report
            print(f"{signum.name} again: leaving at once", file=sys.stderr, flush=True)
        elif engine.interrupted is None:
            engine.stop(signum.name)
            print(f"{signum.name}: stopping the run and writing its report (Ctrl-C again: at once)", file=sys.stderr)

    installed: list[signal.Signals] = []
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread (an embedding application keeps its own handlers)
    try:
        return await engine.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def run_scenario(
    config: RunConfig,
    credentials: Credentials,
    *,
    on_server: Callable[[LocalServer], None] | None = None,
    observers: list[Observer] | None = None,
    thresholds: list[Threshold] | None = None,
    worker: tuple[int, int] = (0, 1),
    start_gate: Callable[[], Awaitable[float]] | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> RunResult:
    """Runs ``config`` and returns its report; starts and stops a local server when no URL is set.

    ``worker`` and ``start_gate`` make this process one of several (see `lkswarm.app.workers`).
    ``on_engine`` gets the engine before it runs (a Ray actor stops it from another thread).
    """
    config = config.pinned()  # one run tag and one seed for the engine's plan and the probes'
    url = resolve_url(config)
    network = open_probe_network(config)  # before the server: it must bind the namespace's gateway
    local: LocalServer | None = None
    try:
        if url is None:
            media_interface = (network.root_device, network.gateway_ip) if network is not None else None
            local = LocalServer(credentials, media_interface=media_interface)
            local.start()
            url = local.url
            if on_server is not None:
                on_server(local)
        if worker[1] == 1:  # with workers, the parent checked once before starting them
            check_signal_path(config, credentials, url)
        engine = build_engine(
            config, credentials, url, observers, probe_network=network, worker=worker, start_gate=start_gate
        )
        if on_engine is not None:
            on_engine(engine)
        watch = ServerWatch(config, local)
        watch.start()
        rcvbuf_errors = udp_receive_buffer_errors()
        record = uvloop.run(run_until_stopped(engine))
        watch.stop()
        kernel_drops = udp_receive_buffer_errors()
        report = as_json(
            build_report(
                record,
                watch.use,
                server_metrics=watch.section(),
                udp_rcvbuf_errors=None
                if kernel_drops is None or rcvbuf_errors is None
                else kernel_drops - rcvbuf_errors,
            )
        )
        if local is not None and (died := local.death_note()) is not None:
            report["warnings"].append(died)
    finally:
        try:
            if local is not None:
                local.stop()
        finally:  # a second Ctrl-C during the server's stop must not leave the probes' namespace behind
            if network is not None:
                network.close()
    report["target"] = {"url": url, "embedded_server": local is not None}
    evaluate(report, thresholds or [])
    media = next((t for t in record.tiers if isinstance(t, MediaTotals)), None)
    rows = media.track_rows if media is not None else []
    return RunResult(report, rows, media.data.rows if media is not None else [])
