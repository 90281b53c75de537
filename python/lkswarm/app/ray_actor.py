"""One generator on a Ray cluster: the actor of ``lkswarm run --ray`` (driven by `lkswarm.app.ray_engine`),
and `CapacityActor`, the share of a ``capacity --ray`` search's load (driven by `lkswarm.app.ray_capacity`).

Theory of operation
-------------------
The actor is a plain class that `lkswarm.app.ray_engine` turns into a Ray actor
(``ray.remote``, one CPU, up to MAX_CONCURRENCY threads), so this module imports
without Ray. Its ``run`` call is one share of the run, exactly as a ``--workers``
process runs one (`lkswarm.app.runner.run_scenario` with ``worker=(i, n)`` and a
start gate); the other calls come from the driver, each in a thread of its own,
while ``run`` runs:

- ``where`` says where the actor lives: its Ray node, host name, pid and address.
- ``wait_ready`` returns once the actor has set up (clips, media thread) and waits
  at its start gate, or once its run ended without getting there.
- ``go`` names the common time origin (unix time), or None to cancel the start.
- ``sample`` returns the latest sample (`lkswarm.app.shares.sample_payload`): the
  driver asks once a second, for its live view, ``/metrics`` and liveness.
- ``stop`` ends the run as a stop signal would (a second SIGINT: at once).

**The API secret never travels in an argument.** The driver puts it in Ray's object
store (``ray.put``) and hands ``run`` a list holding the reference: a reference nested
in a list is passed as it is, not resolved, so only the object id reaches the task's
metadata; the actor reads the value with ``ray.get``. Errors it returns are redacted.

**Media binds to the actor's own node** (`node_bind_ip`): ``media_bind_ip`` is a
node's address, so a cluster's nodes cannot share one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import uvloop

from lkswarm.app.capacity_port import EnginePort
from lkswarm.app.runner import RunResult, build_engine, run_scenario
from lkswarm.app.shares import sample_payload
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.engine import Engine
from lkswarm.engine.timeline import Observer, RunInfo, Snapshot
from lkswarm.errors import LkswarmError
from lkswarm.metrics import process_cpu_s
from lkswarm.report.build import build_report
from lkswarm.report.schema import as_json

MAX_CONCURRENCY = 4  # run, and the driver's calls beside it (sample, stop, go)
PORT_CALLS = frozenset(
    ("add_arrivals", "add_departures", "population", "open_hold", "hold_boundary", "read_hold", "close_hold")
)
CALL_TIMEOUT_S = 20.0  # a port call on the run's loop; past it the actor is taken for hung


def node_bind_ip(configured: str, node_ip: str, server_url: str) -> str:
    """The address an actor's media binds to on its node.

    A loopback server (the embedded one, ``--ray local``) is reached over loopback, as configured. Otherwise
    the configured address stands if it is this node's own; any other (the loopback default, another node's
    address) is replaced by the node's address, which the server can reach.
    """
    host = urllib.parse.urlsplit(server_url if "://" in server_url else f"ws://{server_url}").hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback or configured == node_ip:
        return configured
    return node_ip


class _Samples:
    """The actor's observer: keeps the latest sample for the driver's ``sample`` call."""

    def __init__(self, actor: GeneratorActor, rolling: bool, exposition: bool) -> None:
        self._actor = actor
        self._info: RunInfo | None = None
        self._rolling = rolling
        self._exposition = exposition

    async def start(self, info: RunInfo) -> None:
        self._info = info

    def on_sample(self, snapshot: Snapshot) -> None:
        payload = sample_payload(snapshot, self._info, rolling=self._rolling, exposition=self._exposition)
        self._actor.latest = payload

    async def stop(self) -> None:
        self._actor.ending = True


class _Gate:
    """The start gate and stop of one run, shared by the actor's threads and the run's event loop."""

    def __init__(self) -> None:
        self.ready = threading.Event()  # at the start gate, or the run ended before it
        self.go = threading.Event()
        self.go_at: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: Engine | None = None
        self.stops: list[str] = []  # stop calls that came before the loop was known

    def on_engine(self, engine: Engine) -> None:
        self.engine = engine

    async def start_gate(self) -> float:
        self.loop = asyncio.get_running_loop()
        self.ready.set()
        await asyncio.to_thread(self.go.wait)
        if self.go_at is None:
            raise LkswarmError("the start was cancelled")
        if self.engine is not None:
            for name in self.stops:  # a stop that came between the gate and here
                _stop_engine(self.engine, name)
        return self.go_at

    def stop(self, signal_name: str) -> None:
        loop, engine = self.loop, self.engine
        if loop is None or engine is None:
            self.stops.append(signal_name)
            return
        loop.call_soon_threadsafe(_stop_engine, engine, signal_name)


class GeneratorActor:
    """One share of a run on one Ray worker process (see the module docstring).

    No method is a coroutine: Ray would make it an async actor, whose calls share one event loop
    (which ``run`` would block). The run's own loop lives in a thread of its own."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None
        self.ending = False  # its engine is done: only the report is left to build
        self._gate = _Gate()

    def where(self) -> dict[str, Any]:
        import ray

        return {
            "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "ip": _node_ip(),
        }

    def run(self, job: dict[str, Any], secret: list[Any]) -> dict[str, Any]:
        """Runs share ``job["worker"]`` of ``job["config"]``; returns its report and rows, or its error."""
        import ray

        credentials = Credentials(str(job["api_key"]), str(ray.get(secret[0])))
        gate = self._gate
        try:
            config = RunConfig.from_mapping(job["config"])
            bind_ip = node_bind_ip(config.media_bind_ip, _node_ip(), str(config.url))
            config = config.replace(media_bind_ip=bind_ip)
            index, count = (int(n) for n in job["worker"])
            observers: list[Observer] = [_Samples(self, bool(job.get("rolling")), bool(job.get("exposition")))]
            cpu_before = process_cpu_s(os.getpid())
            result = _in_own_thread(lambda: self._share(config, credentials, (index, count), observers))
        except (LkswarmError, ValueError, OSError) as exc:  # a FieldError is a ValueError
            return {"error": credentials.redact(f"{type(exc).__name__}: {exc}")}
        finally:
            gate.ready.set()
        cpu_after = process_cpu_s(os.getpid())
        cpu_s = None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 3)
        return {
            "report": result.report,
            "track_rows": result.track_rows,
            "data_rows": result.data_rows,
            "process_cpu_s": cpu_s,
            "media_bind_ip": bind_ip,
        }

    def _share(
        self, config: RunConfig, credentials: Credentials, worker: tuple[int, int], observers: list[Observer]
    ) -> RunResult:
        """The share's run, in a thread of its own (a `CapacityActor` runs an open-plan engine instead)."""
        gate = self._gate
        return run_scenario(
            config,
            credentials,
            observers=observers,
            worker=worker,
            start_gate=gate.start_gate,
            on_engine=gate.on_engine,
        )

    def wait_ready(self, timeout_s: float) -> bool:
        """Whether the actor got to its start gate within ``timeout_s`` (False: its run ended before)."""
        gate = self._gate
        return gate.ready.wait(timeout_s) and gate.loop is not None and not gate.go.is_set()

    def go(self, at: float | None) -> None:
        """Opens the start gate at unix time ``at``; None cancels the start (the run ends, nobody started)."""
        self._gate.go_at = at
        self._gate.go.set()

    def sample(self) -> dict[str, Any] | None:
        return self.latest

    def stop(self, signal_name: str) -> None:
        """As a stop signal to a one-process run: the run ends as at its duration; a second SIGINT aborts."""
        self._gate.stop(signal_name)


class CapacityActor(GeneratorActor):
    """One share of a capacity search's load (``capacity --ray``): an open-plan engine, driven through ``call``.

    Its run is an open-plan engine's, started at the common time origin as a run's share is; the driver's
    `lkswarm.app.ray_capacity.RayPort` then adds its arrivals and departures and reads its hold windows by
    ``call``, which runs the `lkswarm.app.capacity_port.EnginePort` method of that name on the run's own loop.
    The run ends on ``call("finish")`` and returns the engine's report."""

    def __init__(self) -> None:
        super().__init__()
        self._port: EnginePort | None = None

    def _share(
        self, config: RunConfig, credentials: Credentials, worker: tuple[int, int], observers: list[Observer]
    ) -> RunResult:
        gate = self._gate
        engine = build_engine(
            config, credentials, str(config.url), observers, worker=worker, start_gate=gate.start_gate, open_plan=True
        )
        gate.on_engine(engine)
        self._port = EnginePort(engine)
        record = uvloop.run(engine.run())
        return RunResult(as_json(build_report(record)))

    def call(self, name: str, *args: Any) -> Any:
        """Port method ``name`` (one of PORT_CALLS, or "finish") on the run's loop; its result."""
        port, loop = self._port, self._gate.loop
        if port is None or loop is None:
            raise LkswarmError(f"{name}: the engine is not running")
        if name == "finish":
            loop.call_soon_threadsafe(port.finish)
            return None
        if name not in PORT_CALLS:
            raise LkswarmError(f"{name} is not a port call")
        return asyncio.run_coroutine_threadsafe(getattr(port, name)(*args), loop).result(CALL_TIMEOUT_S)


def _node_ip() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


def _in_own_thread(call: Callable[[], RunResult]) -> RunResult:
    """``call()`` in a thread of its own: Ray runs an actor's calls in threads that already have an event loop
    running, and the run needs its own (uvloop)."""
    outcome: list[RunResult | BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=target, name="lkswarm-run", daemon=True)
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _stop_engine(engine: Engine, signal_name: str) -> None:
    if engine.interrupted is not None and signal_name == "SIGINT":
        engine.abort(signal_name)
    elif engine.interrupted is None:
        engine.stop(signal_name)
