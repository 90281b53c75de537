"""Several generator processes on one machine: ``lkswarm run --workers N``.

Theory of operation
-------------------
One generator process drives its participants from one event loop and its media
from one Rust thread: about a core's worth of load, however many cores the
machine has. ``--workers N`` runs N generator processes (the hidden ``lkswarm
worker`` command) and merges their reports into one, as ``lkswarm merge`` does.

- **Split by room.** Every worker builds the same plan (same configuration, same
  seed) and keeps the rooms whose index modulo N is its own index. Arrival times,
  identities, seats, publishers and probes are therefore exactly those of a
  single-process run, and a room never spans two processes (so its probes still
  measure each other, and its room check sees one process's views).
- **One time origin.** A worker sets up (clips, media thread, probes), prints
  ``ready`` on stdout and waits. Once every worker is ready, the parent sends
  ``go <unix time>`` on stdin, a moment ahead, and every worker starts its clock
  then: the merged timeline lines up sample by sample and the merged rate is the
  planned rate.
- **Secrets stay in the environment.** Workers get the API key and secret as
  ``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET``, never as arguments (which any
  user can read in ``ps``) nor in the job file.
- **Every participant is counted.** A worker that dies, or never gets ready,
  is merged as a report in which each participant it was given failed with
  ``worker_crashed``, the detail being its exit status and last stderr line.
- **A live view of the whole run.** With a live view, workers write each
  once-a-second sample as a ``sample <json>`` line on stdout; the parent
  combines the latest of each (`lkswarm.engine.timeline.combine_snapshots`) and draws
  one panel.
- **One Prometheus endpoint.** With ``--prometheus``, each sample line also
  carries the worker's counters and histogram buckets, and the parent serves
  their sum on the one address (`lkswarm.observe.prometheus`): buckets add exactly.
- The embedded server (no ``--url``) is started once, by the parent, and shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from lkswarm.app.runner import RunResult, resolve_url, run_scenario
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.outcome import WORKER_CRASHED
from lkswarm.engine.plan import worker_plan
from lkswarm.engine.timeline import Observer, RunInfo, Snapshot, combine_snapshots, rolling_ms, snapshot_from_dict
from lkswarm.errors import ConfigError, LkswarmError
from lkswarm.observe.prometheus import (
    BackgroundMetricsServer,
    Exposition,
    combine_expositions,
    exposition_from_dict,
    exposition_of,
    exposition_to_dict,
    render_metrics,
)
from lkswarm.report.merge import merge_reports
from lkswarm.report.schema import (
    Report,
    RoomRow,
    as_json,
    assemble_report,
    count_outcome,
    empty_room_row,
    outcomes_section,
    participants_section,
)
from lkswarm.report.thresholds import Threshold, evaluate

READY_TIMEOUT_S = 300.0  # set-up, including the first encoding of the media clips on a fresh machine
START_AHEAD_S = 0.5  # "go" names a time this far ahead, so every worker hears it before it passes
EXIT_GRACE_S = 120.0  # after the run: room check, stop grace, media and probe collection, report
READY_LINE = b"ready\n"
SAMPLE_PREFIX = b"sample "
TICK_S = 1.0  # how often the parent redraws the combined live view


def parse_workers(value: str | None, rooms: int) -> int:
    """``--workers N`` or ``auto`` (one per CPU core, at most one per room); 1 when not given."""
    if value is None:
        return 1
    if value == "auto":
        return max(1, min(os.cpu_count() or 1, rooms))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--workers wants a number or 'auto', not {value!r}") from None


def check_workers(config: RunConfig, workers: int) -> None:
    """Refuses (as a usage error, before anything starts) what several processes cannot run."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers > config.rooms:
        raise ConfigError(
            f"--workers {workers}: rooms are split among the worker processes, so a run needs at least as many "
            f"rooms as workers (it has {config.rooms})"
        )
    if workers > 1 and config.probe_impair is not None:
        raise ConfigError("--probe-impair needs a single generator process: leave out --workers")


@dataclass(slots=True)
class WorkerProcess:
    index: int
    process: subprocess.Popen[bytes]
    out_path: Path
    stderr_path: Path
    ready: bool = False
    pending: bytes = b""
    latest: Snapshot | None = None  # its newest sample (set by the drain thread)
    exposition: Exposition | None = None  # its newest Prometheus figures, with that sample (--prometheus)


def run_workers(
    config: RunConfig,
    credentials: Credentials,
    workers: int,
    *,
    on_server: Any = None,
    thresholds: list[Threshold] | None = None,
    prometheus: str | None = None,
    on_sample: Callable[[Snapshot], None] | None = None,
) -> RunResult:
    """Runs ``config`` in ``workers`` processes and returns the merged report (thresholds evaluated on it).

    ``on_sample`` (the live view) gets the workers' combined sample about once a second.
    ``prometheus`` is served here, from the sum of the workers' latest figures.
    """
    check_workers(config, workers)
    if not config.run_tag:
        config = config.model_copy(update={"run_tag": secrets.token_hex(3)})
    url = resolve_url(config)
    local: LocalServer | None = None
    procs: list[WorkerProcess] = []
    started_at = datetime.now(UTC)
    exporter = None if prometheus is None else _parent_exporter(prometheus, procs)
    with tempfile.TemporaryDirectory(prefix="lkswarm-workers-") as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            if exporter is not None:
                exporter.start()
            if url is None:
                local = LocalServer(credentials)
                local.start()
                url = local.url
                if on_server is not None:
                    on_server(local)
            job_config = config.model_copy(update={"url": url}).model_dump(mode="json")
            env = {**os.environ, "LIVEKIT_API_KEY": credentials.api_key, "LIVEKIT_API_SECRET": credentials.api_secret}
            env.pop("LIVEKIT_URL", None)  # the job's url is the one to use
            for index in range(workers):
                job = {
                    "config": job_config,
                    "worker": [index, workers],
                    "stream_rolling": on_sample is not None,  # only the live view shows them
                    "stream_exposition": prometheus is not None,
                    "out": str(tmp / f"worker-{index}.json"),
                }
                procs.append(_spawn(index, job, tmp, env))
            _await_ready(procs, time.monotonic() + READY_TIMEOUT_S)
            go = f"go {time.time() + START_AHEAD_S!r}\n".encode()
            for worker in procs:
                _tell(worker, go)
            _await_exit(procs, time.monotonic() + START_AHEAD_S + config.duration_s + EXIT_GRACE_S, on_sample)
        finally:
            for worker in procs:
                _stop(worker)
            if local is not None:
                local.stop()
            if exporter is not None:
                exporter.stop()
        reports: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        summaries: list[dict[str, Any]] = []
        for worker in procs:
            result = _result_of(worker)
            if result is None:
                detail = credentials.redact(_death_detail(worker))
                report = as_json(crashed_report(config, worker.index, workers, detail, started_at))
            else:
                report = result["report"]
                rows += result.get("track_rows") or []
            reports.append(report)
            summaries.append(
                {
                    "index": worker.index,
                    "pid": worker.process.pid,
                    "exit_code": worker.process.returncode,
                    "crashed": result is None,
                    "scheduled": report["participants"]["scheduled"],
                    "cpu_s": (report.get("generator") or {}).get("cpu_s"),
                    "valid": (report.get("generator") or {}).get("valid"),
                }
            )
    merged = merge_reports(reports)
    merged["config"] = config.model_dump(mode="json")
    merged["workers"] = summaries
    merged["target"] = {"url": url, "embedded_server": local is not None}
    evaluate(merged, thresholds or [])
    return RunResult(merged, rows)


def crashed_report(config: RunConfig, index: int, workers: int, detail: str, started_at: datetime) -> Report:
    """A report in which every participant of worker ``index`` failed with ``worker_crashed``."""
    plan = worker_plan(config, (index, workers))
    rooms: dict[str, RoomRow] = {}
    for arrival in plan:
        name = config.room_name(arrival.room_index)
        row = rooms.setdefault(name, empty_room_row(name))
        row["scheduled"] += 1
        count_outcome(row, WORKER_CRASHED.kind)
    failed = len(plan)
    return assemble_report(
        config=config,
        started_at=started_at,
        duration_s=0.0,
        participants=participants_section(
            scheduled=failed,
            started=0,
            joined=0,
            active=0,
            active_at_end=0,
            alive_at_end=0,
            outcomes=outcomes_section({WORKER_CRASHED.kind: failed}, not_started=0),
            failures={WORKER_CRASHED.reason: failed} if failed else {},
            left_reasons={},
            failure_details={str(WORKER_CRASHED): detail} if failed else {},
            ping_rtt_participants=0,
            departed=0,
        ),
        latency_ms={},
        media={},
        probes={},
        signal={},
        room_check={},
        generator={"valid": False},
        warnings=[
            f"generator worker {index} of {workers} ended without a report ({detail}): its {failed} "
            f"participant(s) are counted as {WORKER_CRASHED}"
        ],
        notes=[],
        histograms={},
        timeline=None,
        rooms=list(rooms.values()),
        failed_participants=[],
    )


# -- the parent's side of the processes ------------------------------------------------


def worker_command(job_path: Path) -> list[str]:
    """The command line of one worker (tests replace it to make a worker die)."""
    return [sys.executable, "-m", "lkswarm", "worker", str(job_path)]


def _spawn(index: int, job: dict[str, Any], tmp: Path, env: dict[str, str]) -> WorkerProcess:
    job_path = tmp / f"worker-{index}.job.json"
    job_path.write_text(json.dumps(job))
    stderr_path = tmp / f"worker-{index}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            worker_command(job_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    return WorkerProcess(index, process, Path(job["out"]), stderr_path)


def _await_ready(procs: list[WorkerProcess], deadline: float) -> None:
    """Reads each worker's stdout until it says ``ready``, exits, or the deadline passes."""
    with selectors.DefaultSelector() as selector:
        for worker in procs:
            assert worker.process.stdout is not None
            selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
        waiting = len(procs)
        while waiting and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                worker = key.data
                chunk = os.read(key.fd, 4096)
                worker.pending += chunk
                if not chunk or READY_LINE in worker.pending:
                    worker.ready = bool(chunk)
                    selector.unregister(key.fileobj)
                    waiting -= 1
    for worker in procs:
        stdout = worker.process.stdout
        if worker.ready and stdout is not None:
            # Read on to the end, so that nothing a worker prints can fill the pipe and block it.
            threading.Thread(target=_read_samples, args=(worker, stdout), daemon=True).start()
        elif worker.process.poll() is None:
            worker.process.kill()  # never got ready: counted as crashed


def _parent_exporter(address: str, procs: list[WorkerProcess]) -> BackgroundMetricsServer:
    """The run's one ``/metrics``: the sum of what each worker last sent (read at scrape time)."""

    def render() -> str:
        return render_metrics(combine_expositions([w.exposition for w in procs if w.exposition is not None]))

    return BackgroundMetricsServer(address, render)


def _read_samples(worker: WorkerProcess, stream: IO[bytes]) -> None:
    for line in stream:
        if line.startswith(SAMPLE_PREFIX):
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                data = json.loads(line[len(SAMPLE_PREFIX) :])
                snapshot = snapshot_from_dict(data)
                if "exposition" in data:
                    worker.exposition = exposition_from_dict(snapshot, data["exposition"])
                worker.latest = snapshot


def _tell(worker: WorkerProcess, line: bytes) -> None:
    stdin = worker.process.stdin
    if stdin is None or worker.process.poll() is not None:
        return
    try:
        stdin.write(line)
        stdin.flush()
    except OSError:
        pass  # it died meanwhile: counted as crashed


def _await_exit(procs: list[WorkerProcess], deadline: float, on_sample: Callable[[Snapshot], None] | None) -> None:
    while any(w.process.poll() is None for w in procs) and time.monotonic() < deadline:
        running = next(w for w in procs if w.process.poll() is None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            running.process.wait(timeout=min(TICK_S, max(0.01, deadline - time.monotonic())))
        latest = [w.latest for w in procs if w.latest is not None]
        if on_sample is not None and latest:
            on_sample(combine_snapshots(latest))
    for worker in procs:
        if worker.process.poll() is None:
            worker.process.kill()  # hung: whatever it wrote is not trusted
            worker.process.wait()


def _stop(worker: WorkerProcess) -> None:
    if worker.process.poll() is None:
        worker.process.kill()
    worker.process.wait()
    for stream in (worker.process.stdin, worker.process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _result_of(worker: WorkerProcess) -> dict[str, Any] | None:
    if worker.process.returncode != 0 or not worker.out_path.exists():
        return None
    try:
        result = json.loads(worker.out_path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and isinstance(result.get("report"), dict) else None


def _death_detail(worker: WorkerProcess) -> str:
    try:
        lines = worker.stderr_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    last = lines[-1][:300] if lines else "no output"
    status = "never got ready" if not worker.ready else f"exit status {worker.process.returncode}"
    return f"{status}: {last}"


# -- the worker's side -------------------------------------------------------------------


def run_worker_job(job_path: Path) -> int:
    """Runs one worker's share (``lkswarm worker JOB``); returns its exit status."""
    try:
        job = json.loads(job_path.read_text())
        index, workers = (int(n) for n in job["worker"])
        config = RunConfig(**job["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"lkswarm worker: {job_path} is not a job written by `lkswarm run --workers`: {exc}", file=sys.stderr)
        return 2
    credentials = Credentials.from_env()
    rolling, exposition = bool(job.get("stream_rolling")), bool(job.get("stream_exposition"))
    observers: list[Observer] = [SampleStream(rolling, exposition)] if rolling or exposition else []

    async def start_gate() -> float:
        os.write(sys.stdout.fileno(), READY_LINE)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.readline)
        word, _, at = line.decode(errors="replace").partition(" ")
        if word != "go":
            raise LkswarmError("the parent process went away before the start")
        return float(at)

    try:
        result = run_scenario(config, credentials, observers=observers, worker=(index, workers), start_gate=start_gate)
    except LkswarmError as exc:
        print(f"worker {index}: {credentials.redact(str(exc))}", file=sys.stderr)
        return 1
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"report": result.report, "track_rows": result.track_rows}))
    tmp.replace(out)
    return 0


class SampleStream:
    """A worker's observer: each sample as one line for the parent, with its rolling percentiles for
    the live view (``with_rolling``) and its Prometheus figures for ``/metrics`` (``with_exposition``)."""

    def __init__(self, with_rolling: bool, with_exposition: bool) -> None:
        self._info: RunInfo | None = None
        self.with_rolling = with_rolling
        self.with_exposition = with_exposition

    async def start(self, info: RunInfo) -> None:
        self._info = info

    def on_sample(self, snapshot: Snapshot) -> None:
        data: dict[str, Any] = {}
        if self._info is not None:
            if self.with_rolling:
                snapshot.rolling_ms = rolling_ms(self._info.metrics, time.perf_counter())
            if self.with_exposition:
                data["exposition"] = exposition_to_dict(exposition_of(self._info, snapshot))
        line = SAMPLE_PREFIX + json.dumps({**dataclasses.asdict(snapshot), **data}).encode() + b"\n"
        with contextlib.suppress(OSError):  # the parent went away: the run goes on and reports
            os.write(sys.stdout.fileno(), line)

    async def stop(self) -> None:
        pass
