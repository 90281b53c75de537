"""A run spread over a Ray cluster: ``lkswarm run --ray local|auto|ray://HOST:PORT``.

Theory of operation
-------------------
Ray is the coordinator: this process is its driver, and each share of the run is a
`lkswarm.app.ray_actor.GeneratorActor`. Ray is an optional extra, imported here only
inside the functions that need it (`import_ray`), so the package imports without it.

- **Where.** ``local`` starts a Ray instance on this machine for the run (and the
  embedded livekit-server when there is no ``--url``); ``auto`` joins the cluster this
  machine belongs to; ``ray://HOST:PORT`` is a Ray client connection. Off ``local``
  the server must be named with ``--url``: the embedded one is on this machine only.
- **How many.** ``--workers N`` actors of one CPU each, by default one per CPU of the
  cluster (at most one per room); ``--workers-per-node K`` caps them per node. A
  cluster with too few CPUs is refused before anything starts (`plan_actors`).
- **Spread.** The actors are placed by a SPREAD placement group, one CPU per bundle;
  each owns the rooms whose index modulo N is its own, as a ``--workers`` process
  does (`lkswarm.app.shares`), so every kind of run builds the same plan.
- **One start.** Every actor sets up and waits at its start gate; once all are there
  (the barrier) the driver names one time origin START_AHEAD_S ahead, in unix time
  (the nodes' clocks must agree: NTP), and every actor starts then.
- **One view.** Once a second the driver asks each actor for its latest sample and
  feeds their combination to the live view; ``--prometheus`` serves the sum of their
  figures from the driver. The final report merges the actors' reports exactly (from
  histograms) and lists each actor under ``workers[]`` with its Ray node, host, pid,
  participants and CPU.
- **Faults.** An actor that dies (its process or its node), or that stops answering
  for HUNG_AFTER_S, is killed if need be and its participants are counted as
  ``worker_crashed``, the detail naming its node and host; the others run on. A stop
  signal (Ctrl-C) is passed to every actor, whose run ends as at its duration, and the
  merged report says ``interrupted``; a second SIGINT skips the grace periods.
- **The secret** goes through Ray's object store only (see `lkswarm.app.ray_actor`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from lkswarm.app.ray_actor import MAX_CONCURRENCY, GeneratorActor
from lkswarm.app.runner import RunResult, check_signal_path, resolve_url
from lkswarm.app.server import LocalServer
from lkswarm.app.server_watch import ServerWatch, add_server_sections
from lkswarm.app.shares import StopSignals, crashed_report, merged_result, read_sample, unstarted_report
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.plan import Arrival
from lkswarm.engine.timeline import Snapshot, combine_snapshots
from lkswarm.errors import ClusterError, ConfigError, LkswarmError
from lkswarm.observe.prometheus import BackgroundMetricsServer, Exposition, combine_expositions, render_metrics
from lkswarm.report.schema import as_json
from lkswarm.report.thresholds import Threshold

INSTALL_HINT = "--ray needs Ray, an optional extra of lkswarm: pip install 'lkswarm[ray]'"
READY_TIMEOUT_S = 300.0  # an actor's set-up, including the first encoding of the media clips on a fresh node
PLACEMENT_TIMEOUT_S = 60.0  # for the placement group's CPUs to be reserved
START_AHEAD_S = 1.0  # the time origin is this far ahead of the barrier, so every node hears it before it passes
HUNG_AFTER_S = 10.0  # an actor that has not answered a sample request for this long is hung
END_GRACE_S = 60.0  # from the run's end to an actor's report (room check, leaving, closing)
STOPPED_GRACE_S = 30.0  # the same from a stop signal
ABORT_GRACE_S = 3.0  # after a second SIGINT
POLL_S = 0.2
TICK_S = 1.0


def import_ray() -> ModuleType:
    """Ray, or a usage error saying in one line how to install it."""
    import importlib

    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def parse_ray_address(value: str) -> str:
    """``local``, ``auto`` or ``ray://HOST:PORT``, as given; anything else is a usage error."""
    if value in ("local", "auto"):
        return value
    parts = urllib.parse.urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme == "ray" and parts.hostname and port:
        return value
    raise ConfigError(f"--ray wants local, auto or ray://HOST:PORT (the head's client port, 10001), not {value!r}")


def check_ray_run(config: RunConfig, address: str) -> None:
    """Refuses (as a usage error, before anything starts) what a Ray run cannot do."""
    if address != "local" and resolve_url(config) is None:
        raise ConfigError(
            f"--ray {address} runs on a cluster, so the server must be named with --url "
            "(the embedded server is for --ray local only)"
        )
    if config.probe_impair is not None:
        raise ConfigError("--probe-impair needs a single generator process: leave out --ray")


def parse_actor_count(value: str | None) -> int | None:
    """``--workers`` under ``--ray``: a number, or None (``auto`` or not given: one per CPU of the cluster)."""
    if value is None or value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--workers wants a number or 'auto', not {value!r}") from None


def plan_actors(requested: int | None, node_cpus: list[float], rooms: int, per_node: int | None) -> int:
    """How many actors to start on nodes with ``node_cpus`` CPUs each; a usage error when they do not fit."""
    if per_node is not None and per_node < 1:
        raise ConfigError("--workers-per-node must be at least 1")
    slots = sum(int(c) if per_node is None else min(per_node, int(c)) for c in node_cpus)
    count = requested if requested is not None else max(1, min(slots, rooms))
    if count < 1:
        raise ConfigError("--workers must be at least 1")
    if count > rooms:
        raise ConfigError(
            f"--workers {count}: rooms are split among the actors, so a run needs at least as many rooms as "
            f"actors (it has {rooms})"
        )
    if count > slots:
        cap = f", at most {per_node} per node" if per_node is not None else ""
        raise ConfigError(
            f"--workers {count}: the Ray cluster has {sum(node_cpus):g} CPU(s) on {len(node_cpus)} node(s), room "
            f"for {slots} actor(s) of one CPU{cap}; add nodes or ask for fewer workers"
        )
    return count


@dataclass(slots=True)
class ActorShare:
    """One actor, as the driver follows it."""

    index: int
    handle: Any
    where: dict[str, Any] = field(default_factory=dict)
    run_ref: Any = None
    ready: bool = False
    done: bool = False
    result: dict[str, Any] | None = None
    error: str | None = None  # how it ended without a report
    cancelled: bool = False  # its start was cancelled: nobody was started
    latest: Snapshot | None = None
    exposition: Exposition | None = None
    sample_ref: Any = None
    asked_at: float = 0.0
    ended_at: float | None = None  # unix time

    @property
    def name(self) -> str:
        node = str(self.where.get("node") or "?")[:16]
        return f"actor {self.index} (node {node}, host {self.where.get('host', '?')}, pid {self.where.get('pid', '?')})"


def redacted_argv(argv: list[str]) -> list[str]:
    """``argv`` with the value of ``--api-secret`` replaced."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--api-secret" and i + 1 < len(out):
            out[i + 1] = "***"
        elif arg.startswith("--api-secret="):
            out[i] = "--api-secret=***"
    return out


@contextlib.contextmanager
def secrets_kept_from_ray() -> Iterator[None]:
    """While Ray starts or joins a cluster: it records this process's command line as the job's entrypoint (in
    the cluster's GCS and on its dashboard), and a local cluster's raylet and actors inherit this process's
    environment. Neither may carry the API secret, which reaches the actors through the object store only."""
    argv, secret = sys.argv, os.environ.pop("LIVEKIT_API_SECRET", None)
    sys.argv = redacted_argv(argv)
    try:
        yield
    finally:
        sys.argv = argv
        if secret is not None:
            os.environ["LIVEKIT_API_SECRET"] = secret


def connect(ray: ModuleType, address: str) -> bool:
    """Joins (or, for ``local``, starts) the cluster; False when this process was already connected."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        with secrets_kept_from_ray():
            if address == "local":
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, gRPC's errors...: one line, no traceback
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ClusterError(f"--ray {address}: could not join the Ray cluster: {first_line}") from None
    return True


def node_cpus(ray: ModuleType) -> list[float]:
    return [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def run_on_ray(
    config: RunConfig,
    credentials: Credentials,
    *,
    address: str,
    workers: int | None = None,
    workers_per_node: int | None = None,
    on_server: Callable[[LocalServer], None] | None = None,
    thresholds: list[Threshold] | None = None,
    prometheus: str | None = None,
    on_sample: Callable[[Snapshot], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Runs ``config`` on Ray actors and returns the merged report (see the module docstring).

    ``on_plan`` hears (actors, nodes) once the cluster is known, before anything starts.
    """
    check_ray_run(config, address)
    ray = import_ray()
    config = config.pinned()  # every actor builds the same plan (a Poisson plan's draws included)
    connected = connect(ray, address)
    try:
        cpus = node_cpus(ray)
        count = plan_actors(workers, cpus, config.rooms, workers_per_node)
        if on_plan is not None:
            on_plan(count, len(cpus))
        return RayDriver(ray, config, credentials, count, workers_per_node).run(
            on_server=on_server, thresholds=thresholds, prometheus=prometheus, on_sample=on_sample
        )
    finally:
        if connected:
            ray.shutdown()


class RayDriver:
    """One Ray run from the driver's side: place, set up, start, follow, collect.

    `lkswarm.app.ray_capacity` drives a capacity search with it: its own actor class, its own following,
    and each share's plan as the search made it (``share_plan``) for the stand-in of an actor that died."""

    actor_class: type = GeneratorActor

    def __init__(
        self, ray: ModuleType, config: RunConfig, credentials: Credentials, count: int, per_node: int | None
    ) -> None:
        self.ray = ray
        self.config = config
        self.credentials = credentials
        self.count = count
        self.per_node = per_node
        self.shares: list[ActorShare] = []
        self.pending_signals: list[signal.Signals] = []
        self.stops = StopSignals(self.pending_signals.append)  # sent on from the main loop, not the handler
        self.go_at: float | None = None

    def run(
        self,
        *,
        on_server: Callable[[LocalServer], None] | None,
        thresholds: list[Threshold] | None,
        prometheus: str | None,
        on_sample: Callable[[Snapshot], None] | None,
    ) -> RunResult:
        url = resolve_url(self.config)
        local: LocalServer | None = None
        server_died: str | None = None
        started_at = datetime.now(UTC)
        exporter = None if prometheus is None else self._exporter(prometheus)
        group = None
        watch: ServerWatch | None = None
        self.stops.install()
        try:
            if exporter is not None:
                exporter.start()
            if url is None:
                local = LocalServer(self.credentials)
                local.start()
                url = local.url
                if on_server is not None:
                    on_server(local)
            check_signal_path(self.config, self.credentials, url)
            self.config = self.config.replace(url=url)
            group = self._place()
            self._launch(group, rolling=on_sample is not None, exposition=prometheus is not None)
            self._await_ready()
            watch = ServerWatch(self.config, local)  # one scrape for the run, not one per actor
            watch.start()
            if self._start():
                self._follow(on_sample)
                watch.stop()
            else:
                self._cancel()
        finally:
            self.stops.restore()
            self._release(group)
            if local is not None:
                server_died = local.death_note()  # before stop(), which removes its log
                local.stop()
            if exporter is not None:
                exporter.stop()
        result = self._merge(url, local is not None, started_at, thresholds)
        if self.go_at is not None and watch is not None:
            add_server_sections(result.report, watch, thresholds)
        if server_died is not None:
            result.report["warnings"].append(server_died)
        return result

    # -- placing and starting ------------------------------------------------------------

    def _place(self) -> Any:
        from ray.util.placement_group import placement_group, placement_group_table

        group = placement_group([{"CPU": 1}] * self.count, strategy="SPREAD")
        ready, _ = self.ray.wait([group.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            self._release(group)
            raise LkswarmError(
                f"Ray could not reserve {self.count} CPU(s) for the actors within {PLACEMENT_TIMEOUT_S:g} s "
                "(other work holds them?)"
            )
        if self.per_node is not None:
            per_node: dict[str, int] = {}
            for node in placement_group_table(group).get("bundles_to_node_id", {}).values():
                per_node[node] = per_node.get(node, 0) + 1
            if max(per_node.values(), default=0) > self.per_node:
                self._release(group)
                raise LkswarmError(
                    f"Ray placed {max(per_node.values())} actors on one node, over --workers-per-node "
                    f"{self.per_node}: SPREAD is best effort on a busy cluster; try again or ask for fewer workers"
                )
        return group

    def _launch(self, group: Any, *, rolling: bool, exposition: bool) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        remote = self.ray.remote(num_cpus=1, max_concurrency=MAX_CONCURRENCY, max_restarts=0)(self.actor_class)
        secret = self.ray.put(self.credentials.api_secret)  # the object store, never an argument (see ray_actor)
        job_config = self.config.to_json()
        for index in range(self.count):
            strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)
            handle = remote.options(scheduling_strategy=strategy).remote()
            self.shares.append(ActorShare(index, handle))
        for share in self.shares:
            job = {
                "config": job_config,
                "worker": [share.index, self.count],
                "api_key": self.credentials.api_key,
                "rolling": rolling,
                "exposition": exposition,
            }
            share.run_ref = share.handle.run.remote(job, [secret])
        wheres = {share.index: share.handle.where.remote() for share in self.shares}
        for share in self.shares:
            try:
                share.where = self.ray.get(wheres[share.index], timeout=READY_TIMEOUT_S)
            except Exception as exc:  # the actor could not start: counted as crashed below
                share.error = f"{share.name} never started: {self._first_line(exc)}"

    def _await_ready(self) -> None:
        refs = {s.handle.wait_ready.remote(READY_TIMEOUT_S): s for s in self.shares if s.error is None}
        deadline = time.monotonic() + READY_TIMEOUT_S + 5.0
        while refs and time.monotonic() < deadline and self.stops.signal_name is None:
            done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
            for ref in done:
                share = refs.pop(ref)
                try:
                    share.ready = bool(self.ray.get(ref))
                except Exception as exc:
                    share.error = f"{share.name} never got ready: {self._first_line(exc)}"
        for share in self.shares:
            if not share.ready and self.stops.signal_name is None:
                self._collect(share, wait_s=5.0)
                if share.error is None:
                    share.error = f"{share.name} never got ready within {READY_TIMEOUT_S:g} s"
            if not share.ready:
                self._kill(share)

    def _start(self) -> bool:
        """Names the time origin to every ready actor, unless a stop signal came during set-up."""
        self.stops.go_at = time.time() + START_AHEAD_S
        if self.stops.signal_name is not None and not self.stops.forwarded:
            return False
        self.pending_signals.clear()  # nothing to pass on: the actors start with the run
        self.go_at = self.stops.go_at
        ready = [s for s in self.shares if s.ready]
        acks = [s.handle.go.remote(self.go_at) for s in ready]
        with contextlib.suppress(Exception):  # an actor that died meanwhile is seen by its run's end
            self.ray.get(acks, timeout=30.0)
        now = time.monotonic()
        for share in ready:
            share.asked_at = now
        return True

    def _cancel(self) -> None:
        """A stop signal before the start: every actor's start is cancelled; nobody was started."""
        for share in self.shares:
            share.cancelled = True
            if share.ready:
                with contextlib.suppress(Exception):
                    share.handle.go.remote(None)
        for share in self.shares:
            self._collect(share, wait_s=5.0)
            self._kill(share)

    # -- following -------------------------------------------------------------------------

    def _follow(self, on_sample: Callable[[Snapshot], None] | None) -> None:
        """Waits until every actor's run has ended, passing stop signals on and feeding the live view."""
        end_at = time.monotonic() + START_AHEAD_S + self.config.duration_s
        next_tick = time.monotonic()
        while running := [s for s in self.shares if s.ready and not s.done]:
            self._pass_signals(running)
            refs = {s.run_ref: s for s in running}
            done, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
            for ref in done:
                self._collect(refs[ref], wait_s=0.0)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK_S
                self._poll_samples(now)
                latest = [s.latest for s in self.shares if s.latest is not None]
                if on_sample is not None and latest:
                    on_sample(combine_snapshots(latest))
            for share in running:
                reason = None if share.done else self._kill_reason(share, now, end_at)
                if reason is not None:
                    share.error = reason
                    self._kill(share)
                    share.done = True

    def _pass_signals(self, running: list[ActorShare]) -> None:
        while self.pending_signals:
            sig = self.pending_signals.pop(0)
            for share in running:
                with contextlib.suppress(Exception):
                    share.handle.stop.remote(sig.name)

    def _poll_samples(self, now: float) -> None:
        asked = {s.sample_ref: s for s in self.shares if s.sample_ref is not None and not s.done}
        if asked:
            answered, _ = self.ray.wait(list(asked), num_returns=len(asked), timeout=0)
            for ref in answered:
                share = asked[ref]
                share.sample_ref = None
                share.asked_at = now
                with contextlib.suppress(Exception):
                    data = self.ray.get(ref)
                    sample = read_sample(data) if isinstance(data, dict) else None
                    if sample is not None:
                        share.latest, exposition = sample
                        share.exposition = exposition or share.exposition
        for share in self.shares:
            if share.ready and not share.done and share.sample_ref is None:
                share.sample_ref = share.handle.sample.remote()

    def _kill_reason(self, share: ActorShare, now: float, end_at: float) -> str | None:
        stops = self.stops
        if stops.aborted_at is not None and now - stops.aborted_at > ABORT_GRACE_S:
            return f"{share.name} still running {ABORT_GRACE_S:g} s after a second SIGINT: killed before its report"
        if share.sample_ref is not None and now - share.asked_at > HUNG_AFTER_S:
            return f"{share.name} hung: no answer for {now - share.asked_at:.0f} s"
        end, deadline = end_at, end_at + END_GRACE_S
        if stops.stopped_at is not None:
            end, deadline = min(end, stops.stopped_at), min(deadline, stops.stopped_at + STOPPED_GRACE_S)
        if now > deadline:
            return f"{share.name} hung: still running {now - end:.0f} s after the end of its run"
        return None

    # -- ending ----------------------------------------------------------------------------

    def _collect(self, share: ActorShare, *, wait_s: float) -> None:
        """Takes ``share``'s run result if it has ended (within ``wait_s``)."""
        if share.done or share.run_ref is None:
            return
        done, _ = self.ray.wait([share.run_ref], timeout=wait_s)
        if not done:
            return
        share.done, share.ended_at = True, time.time()
        try:
            result = self.ray.get(share.run_ref)
        except Exception as exc:  # RayActorError: its process or its node died
            if share.error is None:
                how = "died" if share.ready else "died before it got ready"
                share.error = f"{share.name} {how}: {self._first_line(exc)}"
            return
        if isinstance(result, dict) and isinstance(result.get("report"), dict):
            share.result = result
        elif share.error is None:
            error = result.get("error") if isinstance(result, dict) else None
            how = "failed" if share.ready else "never got ready"
            share.error = f"{share.name} {how}: {error}"

    def _kill(self, share: ActorShare) -> None:
        if share.ended_at is None:
            share.ended_at = time.time()
        with contextlib.suppress(Exception):
            self.ray.kill(share.handle, no_restart=True)

    def _release(self, group: Any) -> None:
        for share in self.shares:
            if not share.done:
                self._kill(share)
        if group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(group)

    def _first_line(self, exc: BaseException) -> str:
        cause = getattr(exc, "cause", None)  # a RayTaskError's own exception
        if isinstance(cause, BaseException):
            exc = cause
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        return self.credentials.redact(text[:300])

    def _exporter(self, address: str) -> BackgroundMetricsServer:
        def render() -> str:
            return render_metrics(combine_expositions([s.exposition for s in self.shares if s.exposition]))

        return BackgroundMetricsServer(address, render)

    def share_plan(self, index: int) -> list[Arrival] | None:
        """Actor ``index``'s arrivals, for its stand-in report; None: its share of the configured plan."""
        return None

    def _merge(
        self, url: str | None, embedded: bool, started_at: datetime, thresholds: list[Threshold] | None
    ) -> RunResult:
        config, count, started = self.config, self.count, self.go_at is not None
        reports: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        data_rows: list[dict[str, Any]] = []
        summaries: list[dict[str, Any]] = []
        by_index = {share.index: share for share in self.shares}
        for index in range(count):
            share = by_index.get(index)
            result = share.result if share is not None else None
            if not started or (share is not None and share.cancelled):
                report = as_json(unstarted_report(config, index, count, started_at, plan=self.share_plan(index)))
            elif result is None:
                detail = share.error if share is not None and share.error else f"actor {index} never started"
                at_s = max(0.0, (share.ended_at or 0.0) - (self.go_at or 0.0)) if share and share.ready else 0.0
                detail = self.credentials.redact(detail)
                plan = self.share_plan(index)
                report = as_json(crashed_report(config, index, count, detail, started_at, at_s=at_s, plan=plan))
            else:
                report = result["report"]
                rows += result.get("track_rows") or []
                data_rows += result.get("data_rows") or []
            reports.append(report)
            summaries.append(_summary(index, share, report, started and result is None))
        return merged_result(
            reports,
            config,
            summaries=summaries,
            target={"url": url, "embedded_server": embedded},
            interrupted=self.stops.interrupted(),
            started=started,
            thresholds=thresholds,
            track_rows=rows,
            data_rows=data_rows,
        )


def _summary(index: int, share: ActorShare | None, report: dict[str, Any], crashed: bool) -> dict[str, Any]:
    """One actor's row of ``workers[]``."""
    where = share.where if share is not None else {}
    result = (share.result if share is not None else None) or {}
    generator = report.get("generator") or {}
    participants = report.get("participants") or {}
    return {
        "index": index,
        "node": where.get("node"),
        "host": where.get("host"),
        "pid": where.get("pid") or 0,
        "exit_code": None,
        "ip": where.get("ip"),
        "media_bind_ip": result.get("media_bind_ip"),
        "crashed": crashed,
        "detail": share.error if share is not None and crashed else None,
        "scheduled": participants.get("scheduled"),
        "participants": participants.get("scheduled"),
        "joined": participants.get("joined"),
        "cpu_s": generator.get("cpu_s"),
        "process_cpu_s": result.get("process_cpu_s"),
        "valid": generator.get("valid"),
    }
