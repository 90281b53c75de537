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
  ``worker_crashed``, the detail naming the worker, its exit status and last
  stderr line; each is listed in ``failed_participants`` (and so in
  ``failures.csv``) by identity and room, as a worker lists its own failures.
- **A hung worker is found within seconds.** From ``go`` on, a worker writes
  lines on stdout from its event loop: ``alive`` every second, its ``sample
  <json>`` every second of its run, and ``ending`` once its engine is done
  (only the report is left to build). A worker silent for
  HUNG_AFTER_S before ``ending`` (SIGSTOP, a blocked event loop), still running
  REPORT_GRACE_S after it, or still running END_GRACE_S after the run's end is
  killed, and its participants fail with ``worker_crashed``, the detail naming
  the worker and saying it hung. A run is never held longer than that.
- **Stop signals are relayed** (`StopSignals`). The first SIGINT, SIGTERM or
  SIGHUP to the parent is sent on, as it is, to every worker: each ends its run as
  at its duration and writes its report (`lkswarm.app.runner.run_until_stopped`),
  the parent merges them and marks the merged report ``interrupted`` (the signal,
  and the seconds since the start), and the CLI writes every output. A second
  SIGINT is sent on too (the workers skip their grace periods) and whatever still
  runs ABORT_GRACE_S later is killed. Before ``go`` a signal cancels the start:
  the workers are killed and nobody was started. Workers run in a process group
  of their own, so a Ctrl-C in a terminal reaches the parent alone, which decides.
- **Workers die with the parent**, even on SIGKILL: each asks the kernel for
  SIGTERM when its parent goes (``PR_SET_PDEATHSIG``), and the end of its stdin
  (the parent's end of the pipe closes when it dies) tells it the same on any
  system. An orphan stops its run, so its participants leave the server, and
  exits ORPHAN_EXIT_S later at the latest, removing its files: nobody will read
  its report. The worker's side of all this is `lkswarm.app.worker_job`.
- **A live view of the whole run.** The workers' ``sample <json>`` lines are
  what the live view draws: the parent combines the latest of each
  (`lkswarm.engine.timeline.combine_snapshots`) into one panel. Only with a live
  view do samples carry the rolling percentiles that cost the worker some CPU.
- **One Prometheus endpoint.** With ``--prometheus``, each sample line also
  carries the worker's counters and histogram buckets, and the parent serves
  their sum on the one address (`lkswarm.observe.prometheus`): buckets add exactly.
- The embedded server (no ``--url``) is started once, by the parent, and shared.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
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

from lkswarm.app.runner import RunResult, check_signal_path, resolve_url
from lkswarm.app.server import LocalServer
from lkswarm.app.server_watch import ServerWatch, add_server_sections
from lkswarm.app.shares import (
    STOP_NOTE_PREFIX,
    StopSignals,
    check_workers,
    crashed_report,
    merged_result,
    parse_workers,
    read_sample,
    unstarted_report,
)
from lkswarm.app.worker_job import ENDING_LINE, READY_LINE, SAMPLE_PREFIX, TICK_S
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.timeline import Snapshot, combine_snapshots
from lkswarm.observe.prometheus import BackgroundMetricsServer, Exposition, combine_expositions, render_metrics
from lkswarm.report.schema import as_json
from lkswarm.report.thresholds import Threshold

__all__ = [  # the shared pieces, importable from here as before
    "STOP_NOTE_PREFIX",
    "check_workers",
    "crashed_report",
    "parse_workers",
    "run_workers",
    "unstarted_report",
]

READY_TIMEOUT_S = 300.0  # set-up, including the first encoding of the media clips on a fresh machine
START_AHEAD_S = 0.5  # "go" names a time this far ahead, so every worker hears it before it passes
# A worker writes a line every second from "go" to "ending": five seconds of silence is a stopped process
# or a blocked event loop (whose run is spoiled anyway: its timers are seconds late), not a busy one.
HUNG_AFTER_S = 5.0
REPORT_GRACE_S = 30.0  # from "ending" to its exit: the report is built and written, nothing awaits the network
# From the run's end to a worker's exit, while it still writes "alive": the room check, leaving (STOP_GRACE_S),
# media and probe collection and closing (each bounded in the worker); a cap on one stuck without hanging.
END_GRACE_S = 60.0
STOPPED_GRACE_S = 30.0  # the same from a stop signal: no room check then
ABORT_GRACE_S = 3.0  # after a second SIGINT: the workers skip every grace period and write what they have
POLL_S = 0.2  # how often the parent looks at its workers (and at the stop signals it got)


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
    heard_at: float = 0.0  # monotonic time of its latest line (set by the drain thread from "go" on)
    ending_at: float | None = None  # when it said "ending": its engine is done, its report comes next
    killed_because: str | None = None  # why the parent killed it (it hung, a second SIGINT): its crash detail
    ended_at: float | None = None  # unix time the parent saw it end (or killed it), from "go" on

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.process.pid})"


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
    ``prometheus`` is served here, from the sum of the workers' latest figures. A stop signal
    ends the run early and the merged report says so in ``interrupted`` (see `StopSignals`).
    """
    check_workers(config, workers)
    config = config.pinned()  # every worker builds the same plan (a Poisson plan's draws included)
    url = resolve_url(config)
    local: LocalServer | None = None
    server_died: str | None = None
    procs: list[WorkerProcess] = []
    stops = StopSignals(lambda sig: _send_all(procs, sig))
    started_at = datetime.now(UTC)
    started = False
    watch: ServerWatch | None = None
    exporter = None if prometheus is None else _parent_exporter(prometheus, procs)
    stops.install()
    try:
        with tempfile.TemporaryDirectory(prefix="lkswarm-workers-") as tmp_dir:
            tmp = Path(tmp_dir)
            try:
                if exporter is not None:
                    exporter.start()
                if url is None and stops.signal_name is None:
                    local = LocalServer(credentials)
                    local.start()
                    url = local.url
                    if on_server is not None:
                        on_server(local)
                if stops.signal_name is None:
                    assert url is not None
                    check_signal_path(config, credentials, url)  # once here, not in every worker
                    streams = {"stream_rolling": on_sample is not None, "stream_exposition": prometheus is not None}
                    _spawn_all(config, credentials, workers, url, tmp, procs, **streams)
                    _await_ready(procs, time.monotonic() + READY_TIMEOUT_S, stops)
                    watch = ServerWatch(config, local)  # one scrape for the run, not one per worker
                    watch.start()
                    started = _start(procs, stops)
                if started:
                    end_at = time.monotonic() + START_AHEAD_S + config.duration_s
                    _await_exit(procs, stops, end_at, on_sample)
                    if watch is not None:
                        watch.stop()
            finally:
                for worker in procs:
                    _stop(worker)
                if local is not None:
                    server_died = local.death_note()
                    local.stop()
                if exporter is not None:
                    exporter.stop()
            go_at = stops.go_at if started else None
            reports, rows, summaries, data_rows = _collect(config, credentials, workers, procs, go_at, started_at)
    finally:
        stops.restore()
    result = merged_result(
        reports,
        config,
        summaries=summaries,
        target={"url": url, "embedded_server": local is not None},
        interrupted=stops.interrupted(),
        started=started,
        thresholds=thresholds,
        track_rows=rows,
        data_rows=data_rows,
    )
    if started and watch is not None:
        add_server_sections(result.report, watch, thresholds)
    if server_died is not None:
        result.report["warnings"].append(server_died)
    return result


def _send_all(procs: list[WorkerProcess], sig: signal.Signals) -> None:
    for worker in procs:
        with contextlib.suppress(OSError):
            worker.process.send_signal(sig)  # skips a worker already reaped


def _spawn_all(
    config: RunConfig,
    credentials: Credentials,
    workers: int,
    url: str,
    tmp: Path,
    procs: list[WorkerProcess],
    *,
    stream_rolling: bool,
    stream_exposition: bool,
) -> None:
    """Starts the worker processes (appended to ``procs`` one by one, so a failure leaves them stoppable)."""
    job_config = config.replace(url=url).to_json()
    env = {**os.environ, "LIVEKIT_API_KEY": credentials.api_key, "LIVEKIT_API_SECRET": credentials.api_secret}
    env.pop("LIVEKIT_URL", None)  # the job's url is the one to use
    for index in range(workers):
        job = {
            "config": job_config,
            "worker": [index, workers],
            "stream_samples": True,  # always: they are how the parent knows a worker is alive
            "stream_rolling": stream_rolling,  # only the live view shows them
            "stream_exposition": stream_exposition,
            "out": str(tmp / f"worker-{index}.json"),
            "parent_pid": os.getpid(),  # a worker that finds another parent knows this one is gone
        }
        procs.append(_spawn(index, job, tmp, env))


def _start(procs: list[WorkerProcess], stops: StopSignals) -> bool:
    """Sends ``go``, unless a stop signal came during set-up; returns whether the run started."""
    # go_at first: a signal from now on is forwarded to the workers, one before it cancels the start.
    stops.go_at = time.time() + START_AHEAD_S
    if stops.signal_name is not None and not stops.forwarded:
        return False
    go = f"go {stops.go_at!r}\n".encode()
    now = time.monotonic()
    for worker in procs:
        worker.heard_at = now  # silence is counted from here
        _tell(worker, go)
    return True


def _collect(
    config: RunConfig,
    credentials: Credentials,
    workers: int,
    procs: list[WorkerProcess],
    go_at: float | None,
    started_at: datetime,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Each worker's report (a crashed or an unstarted one in its place), track rows, summary and data rows.

    ``go_at`` is the workers' time origin (unix time) if the run started, else None.
    """
    started = go_at is not None
    reports: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    data_rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    by_index = {worker.index: worker for worker in procs}
    for index in range(workers):
        worker = by_index.get(index)
        result = _result_of(worker) if worker is not None and started else None
        if not started:
            report = as_json(unstarted_report(config, index, workers, started_at))
        elif result is None:
            never = f"worker {index} never started"
            detail = credentials.redact(_death_detail(worker)) if worker is not None else never
            at_s = _ended_s(worker, go_at)
            report = as_json(crashed_report(config, index, workers, detail, started_at, at_s=at_s))
        else:
            report = result["report"]
            rows += result.get("track_rows") or []
            data_rows += result.get("data_rows") or []
        reports.append(report)
        if worker is not None:
            summaries.append(
                {
                    "index": worker.index,
                    "pid": worker.process.pid,
                    "exit_code": worker.process.returncode,
                    "crashed": started and result is None,
                    "scheduled": report["participants"]["scheduled"],
                    "cpu_s": (report.get("generator") or {}).get("cpu_s"),
                    "valid": (report.get("generator") or {}).get("valid"),
                }
            )
    return reports, rows, summaries, data_rows


def _ended_s(worker: WorkerProcess | None, go_at: float | None) -> float:
    """When ``worker`` was seen to end, in seconds since the run's start (0 when unknown or before it)."""
    if worker is None or not worker.ready or worker.ended_at is None or go_at is None:
        return 0.0
    return max(0.0, worker.ended_at - go_at)


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
            # A group of its own: a Ctrl-C in a terminal reaches the parent alone, which relays it once the
            # worker can take it (see StopSignals); a worker still setting up would die of it.
            process_group=0,
        )
    return WorkerProcess(index, process, Path(job["out"]), stderr_path)


def _await_ready(procs: list[WorkerProcess], deadline: float, stops: StopSignals) -> None:
    """Reads each worker's stdout until it says ``ready``, exits, the deadline passes or a stop signal comes."""
    with selectors.DefaultSelector() as selector:
        for worker in procs:
            assert worker.process.stdout is not None
            selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
        waiting = len(procs)
        while waiting and time.monotonic() < deadline and stops.signal_name is None:
            for key, _ in selector.select(timeout=min(POLL_S, max(0.0, deadline - time.monotonic()))):
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
            threading.Thread(target=_read_lines, args=(worker, stdout), daemon=True).start()
        elif worker.process.poll() is None:
            worker.process.kill()  # never got ready: counted as crashed


def _parent_exporter(address: str, procs: list[WorkerProcess]) -> BackgroundMetricsServer:
    """The run's one ``/metrics``: the sum of what each worker last sent (read at scrape time)."""

    def render() -> str:
        return render_metrics(combine_expositions([w.exposition for w in procs if w.exposition is not None]))

    return BackgroundMetricsServer(address, render)


def _read_lines(worker: WorkerProcess, stream: IO[bytes]) -> None:
    """A worker's stdout after ``ready``: every line says it is alive; samples feed the live view."""
    for line in stream:
        worker.heard_at = time.monotonic()
        if line == ENDING_LINE:
            worker.ending_at = worker.heard_at
        elif line.startswith(SAMPLE_PREFIX):
            with contextlib.suppress(ValueError):
                sample = read_sample(json.loads(line[len(SAMPLE_PREFIX) :]))
                if sample is not None:
                    snapshot, exposition = sample
                    if exposition is not None:
                        worker.exposition = exposition
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


def _await_exit(
    procs: list[WorkerProcess], stops: StopSignals, end_at: float, on_sample: Callable[[Snapshot], None] | None
) -> None:
    """Waits, from ``go``, until every worker has exited, killing the ones that hang (`_kill_reason`).

    ``end_at`` is the monotonic time of the run's planned end. The live view is fed once a second.
    """
    next_view_at = time.monotonic() + TICK_S
    while running := [w for w in procs if w.process.poll() is None]:
        now = time.monotonic()
        for worker in running:
            reason = _kill_reason(worker, now, stops, end_at)
            if reason is not None:
                worker.killed_because = reason
                worker.ended_at = time.time()
                worker.process.kill()  # SIGKILL ends a stopped process too
        with contextlib.suppress(subprocess.TimeoutExpired):
            running[0].process.wait(timeout=POLL_S)
        for worker in running:
            if worker.ended_at is None and worker.process.poll() is not None:
                worker.ended_at = time.time()
        latest = [w.latest for w in procs if w.latest is not None]
        if on_sample is not None and latest and time.monotonic() >= next_view_at:
            next_view_at += TICK_S
            on_sample(combine_snapshots(latest))


def _kill_reason(worker: WorkerProcess, now: float, stops: StopSignals, end_at: float) -> str | None:
    """Why a running worker must be killed now, or None: the states of the module docstring's liveness rule."""
    if stops.aborted_at is not None and now - stops.aborted_at > ABORT_GRACE_S:
        return f"{worker.name} still running {ABORT_GRACE_S:g} s after a second SIGINT: killed before its report"
    if worker.ending_at is not None:  # its engine is done; only the report is left to write
        if now - worker.ending_at > REPORT_GRACE_S:
            return f"{worker.name} hung: no report {now - worker.ending_at:.0f} s after its run ended"
        return None
    silent_s = now - worker.heard_at
    if silent_s > HUNG_AFTER_S:
        return f"{worker.name} hung: no sample for {silent_s:.0f} s"
    end, deadline = end_at, end_at + END_GRACE_S  # alive, but stuck somewhere after its run's end
    if stops.stopped_at is not None:  # a stop signal ended the run: no room check, a shorter wait
        end, deadline = min(end, stops.stopped_at), min(deadline, stops.stopped_at + STOPPED_GRACE_S)
    if now > deadline:
        return f"{worker.name} hung: still running {now - end:.0f} s after the end of its run"
    return None


def _stop(worker: WorkerProcess) -> None:
    if worker.process.poll() is None:
        worker.process.kill()
    if worker.ended_at is None:
        worker.ended_at = time.time()
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
    if worker.killed_because is not None:
        return worker.killed_because
    try:
        lines = worker.stderr_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    last = lines[-1][:300] if lines else "no output"
    if not worker.ready:
        return f"{worker.name} never got ready: {last}"
    return f"{worker.name} crashed (exit status {worker.process.returncode}): {last}"
