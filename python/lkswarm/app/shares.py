"""What every way of splitting a run over generator processes shares: ``--workers N`` on one machine
(`lkswarm.app.workers`) and actors on a Ray cluster (`lkswarm.app.ray_engine`).

- **One plan, split by room.** Every share builds the same plan (same configuration, same seed) and
  keeps the rooms whose index modulo N is its own (`lkswarm.engine.plan.worker_plan`), so a one-process
  run, a ``--workers`` run and a Ray run start the same participants at the same times.
- **Every participant is counted.** A share that ended without a report is merged as a report in which
  each of its participants failed with ``worker_crashed`` (`crashed_report`), or was never started when
  a stop came before the start (`unstarted_report`).
- **Samples travel as JSON objects** (`sample_payload`, `read_sample`): the share's `Snapshot`, with its
  rolling percentiles for a live view and its Prometheus figures for one ``/metrics`` when asked.
- **One merged report** (`merged_result`): the shares' reports merged exactly (from histograms), with the
  run's configuration, its ``workers[]`` and, after a stop signal, one ``interrupted`` and one note.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from types import FrameType
from typing import Any, cast

from lkswarm.app.runner import STOP_SIGNALS, RunResult
from lkswarm.config import RunConfig
from lkswarm.engine.outcome import WORKER_CRASHED
from lkswarm.engine.plan import Arrival, worker_plan
from lkswarm.engine.record import MAX_FAILED_ROWS, FailedRow
from lkswarm.engine.timeline import RunInfo, Snapshot, rolling_ms, snapshot_from_dict
from lkswarm.errors import ConfigError
from lkswarm.observe.prometheus import Exposition, exposition_from_dict, exposition_of, exposition_to_dict
from lkswarm.report.build import ENDED_EARLY_PREFIX, ended_early_note
from lkswarm.report.merge import merge_reports
from lkswarm.report.schema import FailedRow as FailedRowDict
from lkswarm.report.schema import (
    Report,
    RoomRow,
    assemble_report,
    count_outcome,
    empty_room_row,
    outcomes_section,
    participants_section,
)
from lkswarm.report.thresholds import Threshold, evaluate

STOP_NOTE_PREFIX = "the run was stopped by "  # how a report's note on a stop signal begins


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


def one_stop_note(notes: list[str], signal_name: str, started: bool) -> list[str]:
    """``notes`` with one note on the stop: each worker wrote its own (`lkswarm.report.build`, at its own
    ``at_s``, a few milliseconds apart) and the first is kept; before the start nobody wrote one."""
    theirs = [note for note in notes if note.startswith(STOP_NOTE_PREFIX)]
    if not started:
        theirs = [f"{STOP_NOTE_PREFIX}{signal_name} before its start: no participant was started"]
    return [note for note in notes if not note.startswith(STOP_NOTE_PREFIX)] + theirs[:1]


def crashed_report(
    config: RunConfig,
    index: int,
    workers: int,
    detail: str,
    started_at: datetime,
    *,
    at_s: float = 0.0,
    plan: Sequence[Arrival] | None = None,
) -> Report:
    """A report in which every participant of worker ``index`` failed with ``worker_crashed`` at ``at_s``.

    Each is listed in ``failed_participants`` (the first MAX_FAILED_ROWS, in plan order, as a worker lists
    its own), its detail being ``detail``: the worker and how it ended. ``plan``: the worker's arrivals when
    they are not its share of ``config``'s plan (a capacity search's, made as it went).
    """
    return share_report(config, index, workers, started_at, crash_detail=detail, at_s=at_s, plan=plan)


def unstarted_report(
    config: RunConfig, index: int, workers: int, started_at: datetime, *, plan: Sequence[Arrival] | None = None
) -> Report:
    """A report in which no participant of worker ``index`` was started (a stop signal came before the start)."""
    return share_report(config, index, workers, started_at, crash_detail=None, plan=plan)


def share_report(
    config: RunConfig,
    index: int,
    workers: int,
    started_at: datetime,
    *,
    crash_detail: str | None,
    at_s: float = 0.0,
    plan: Sequence[Arrival] | None = None,
) -> Report:
    """Worker ``index``'s share of the plan, every participant failed (``crash_detail``) or not started (None)."""
    if plan is None:
        plan = worker_plan(config, (index, workers))
    rooms: dict[str, RoomRow] = {}
    failed_rows: list[FailedRowDict] = []
    for arrival in plan:
        name = config.room_name(arrival.room_index)
        row = rooms.setdefault(name, empty_room_row(name))
        row["scheduled"] += 1
        if crash_detail is not None:
            count_outcome(row, WORKER_CRASHED.kind)
            if len(failed_rows) < MAX_FAILED_ROWS:
                one = FailedRow(config.identity(arrival.index), name, WORKER_CRASHED, crash_detail, at_s)
                failed_rows.append(cast(FailedRowDict, one.to_dict()))
    failed = len(plan) if crash_detail is not None else 0
    warnings = []
    if crash_detail is not None:
        warnings.append(
            f"generator worker {index} of {workers} ended without a report ({crash_detail}): its {failed} "
            f"participant(s) are counted as {WORKER_CRASHED}"
        )
    return assemble_report(
        config=config,
        started_at=started_at,
        duration_s=0.0,
        participants=participants_section(
            scheduled=len(plan),
            started=0,
            joined=0,
            active=0,
            active_at_end=0,
            alive_at_end=0,
            outcomes=outcomes_section({WORKER_CRASHED.kind: failed}, not_started=len(plan) - failed),
            failures={WORKER_CRASHED.reason: failed} if failed else {},
            left_reasons={},
            failure_details={str(WORKER_CRASHED): crash_detail or ""} if failed else {},
            ping_rtt_participants=0,
            departed=0,
        ),
        latency_ms={},
        media={},
        probes={},
        signal={},
        room_check={},
        generator={"valid": False},
        warnings=warnings,
        notes=[],
        histograms={},
        timeline=None,
        rooms=list(rooms.values()),
        failed_participants=failed_rows,
    )


class StopSignals:
    """The parent's stop signals (SIGINT, SIGTERM, SIGHUP), relayed to its workers (``send``).

    Theory of operation: the handlers only record and forward; the parent's main loop acts on what
    they recorded. Until ``go_at`` is set the workers are still setting up (and may not handle a
    signal yet): a signal is recorded and the parent cancels the start. From then on the first
    signal is sent on, as it is, to every worker, whose engine ends its run as at its duration and
    writes its report naming the signal; the parent waits for them (bounded by STOPPED_GRACE_S).
    A second SIGINT is sent on as well (a worker's second Ctrl-C skips its grace periods) and
    ``aborted_at`` tells the main loop to kill whatever still runs ABORT_GRACE_S later. Other
    repeats are ignored. A handler runs between two bytecodes of the main thread, so it writes its
    message with ``os.write`` (a buffered stream may be in the middle of a write) and sends with
    ``Popen.send_signal`` (which skips a worker already reaped). Handlers are installed from the
    main thread only, and `restore` puts the previous ones back.
    """

    def __init__(self, send: Callable[[signal.Signals], None]) -> None:
        self.send = send  # passes a signal on to every worker (a process, an actor)
        self.go_at: float | None = None  # the workers' time origin (unix time), once "go" is decided
        self.signal_name: str | None = None  # the first stop signal's name
        self.at_s = 0.0  # when it came, in seconds since the start
        self.stopped_at: float | None = None  # ... and in monotonic time
        self.forwarded = False  # the first signal reached the workers (it came after go_at was set)
        self.aborted_at: float | None = None  # monotonic time of a second SIGINT
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread (an embedding application keeps its own)
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def interrupted(self) -> dict[str, Any] | None:
        """The merged report's ``interrupted`` key: the first signal and when it came; None without one."""
        return None if self.signal_name is None else {"signal": self.signal_name, "at_s": self.at_s}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.signal_name is None:
            self.signal_name, self.stopped_at = sig.name, time.monotonic()
            self.at_s = round(max(0.0, time.time() - self.go_at), 3) if self.go_at is not None else 0.0
            self.forwarded = self._forward(sig)
            _say(f"{sig.name}: stopping the workers; the run's report is still written (Ctrl-C again: at once)")
        elif sig == signal.SIGINT and self.aborted_at is None:
            self.aborted_at = time.monotonic()
            self._forward(sig)
            _say(f"{sig.name} again: the workers leave at once")

    def _forward(self, sig: signal.Signals) -> bool:
        if self.go_at is None:
            return False  # still setting up: the main loop cancels the start
        self.send(sig)
        return True


def _say(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), message.encode() + b"\n")


def sample_payload(snapshot: Snapshot, info: RunInfo | None, *, rolling: bool, exposition: bool) -> dict[str, Any]:
    """One sample as a JSON object: the snapshot, with rolling percentiles and Prometheus figures if asked."""
    extra: dict[str, Any] = {}
    if info is not None:
        if rolling:
            snapshot.rolling_ms = rolling_ms(info.metrics, time.perf_counter())
        if exposition:
            extra["exposition"] = exposition_to_dict(exposition_of(info, snapshot))
    return {**dataclasses.asdict(snapshot), **extra}


def read_sample(data: dict[str, Any]) -> tuple[Snapshot, Exposition | None] | None:
    """A sample from `sample_payload` (None when it is not one): the snapshot and its Prometheus figures."""
    try:
        snapshot = snapshot_from_dict(data)
        exposition = exposition_from_dict(snapshot, data["exposition"]) if "exposition" in data else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return snapshot, exposition


def merged_result(
    reports: list[dict[str, Any]],
    config: RunConfig,
    *,
    summaries: list[dict[str, Any]],
    target: dict[str, Any],
    interrupted: dict[str, Any] | None,
    started: bool,
    thresholds: list[Threshold] | None,
    track_rows: list[dict[str, Any]],
    data_rows: list[dict[str, Any]],
) -> RunResult:
    """The shares' reports merged into the run's one report (thresholds evaluated on it)."""
    merged = merge_reports(reports, one_run=True)
    merged["config"] = config.to_json()
    # A share whose participants all ended early (or that had none) says so of itself; the run ended early only if
    # all of them did, as the merged duration tells.
    notes = [note for note in merged.get("notes") or [] if not note.startswith(ENDED_EARLY_PREFIX)]
    ended_early = any(note.startswith(ENDED_EARLY_PREFIX) for note in merged.get("notes") or [])
    if ended_early and interrupted is None and merged["duration_s"] < config.duration_s - 0.5:
        notes.append(ended_early_note(merged["duration_s"], config.duration_s))
    merged["notes"] = notes
    merged["workers"] = summaries
    merged["target"] = target
    if interrupted is not None:
        merged["interrupted"] = interrupted
        merged["notes"] = one_stop_note(merged.get("notes") or [], interrupted["signal"], started)
    evaluate(merged, thresholds or [])
    return RunResult(merged, track_rows, data_rows)
