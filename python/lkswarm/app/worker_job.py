"""The worker's side of ``lkswarm run --workers N``: one generator process of several.

Theory of operation
-------------------
The parent (`lkswarm.app.workers`, whose header has the whole protocol) writes a job file and
starts ``lkswarm worker JOB``. `run_worker_job` reads the job, sets up, writes ``ready`` on stdout
and waits for ``go <unix time>`` on stdin (`ParentLink`, a thread of its own); the run's clock
starts then. From ``go`` to the end of its engine, `SampleStream` writes a line every second from
the event loop (``alive``, and ``sample <json>`` per sample), then ``ending``; the report goes to
the job's ``out`` file, written whole or not at all. The end of stdin means the parent is gone:
the worker stops its run as on SIGTERM and exits ORPHAN_EXIT_S later, removing its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from lkswarm.app.runner import run_scenario
from lkswarm.app.server import parent_death_signal
from lkswarm.app.shares import sample_payload
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.timeline import Observer, RunInfo, Snapshot
from lkswarm.errors import LkswarmError

ORPHAN_EXIT_S = 3.0  # a worker whose parent is gone: time for its participants to leave the server
# The lines a worker writes on stdout, which the parent reads.
READY_LINE = b"ready\n"
SAMPLE_PREFIX = b"sample "
ALIVE_LINE = b"alive\n"
ENDING_LINE = b"ending\n"
TICK_S = 1.0  # how often a worker says it is alive, and the parent redraws the combined live view


def run_worker_job(job_path: Path) -> int:
    """Runs one worker's share (``lkswarm worker JOB``); returns its exit status."""
    try:
        job = json.loads(job_path.read_text())
        index, workers = (int(n) for n in job["worker"])
        config = RunConfig.from_mapping(job["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a FieldError is a ValueError
        print(f"lkswarm worker: {job_path} is not a job written by `lkswarm run --workers`: {exc}", file=sys.stderr)
        return 2
    parent_pid = job.get("parent_pid")
    if isinstance(parent_pid, int):
        parent_death_signal(signal.SIGTERM)  # set first, then checked: the parent may have died before
        if os.getppid() != parent_pid:
            return 1
    credentials = Credentials.from_env()
    rolling, exposition = bool(job.get("stream_rolling")), bool(job.get("stream_exposition"))
    streams = rolling or exposition or bool(job.get("stream_samples"))
    observers: list[Observer] = [SampleStream(rolling, exposition)] if streams else []
    link = ParentLink(sys.stdin.fileno(), job_path)
    link.start()

    async def start_gate() -> float:
        os.write(sys.stdout.fileno(), READY_LINE)
        await asyncio.to_thread(link.heard.wait)
        if link.go_at is None:
            raise LkswarmError("the parent process went away before the start")
        return link.go_at

    try:
        result = run_scenario(config, credentials, observers=observers, worker=(index, workers), start_gate=start_gate)
    except LkswarmError as exc:
        print(f"worker {index}: {credentials.redact(str(exc))}", file=sys.stderr)
        return 1
    if link.gone:
        link.remove_files()  # nobody will read the report
        return 1
    out = Path(job["out"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"report": result.report, "track_rows": result.track_rows, "data_rows": result.data_rows})
    )
    tmp.replace(out)
    return 0


class ParentLink:
    """A worker's end of the pipe from its parent (its stdin), read by a thread of its own.

    ``go <unix time>`` starts the run. The end of the file means the parent is gone: it holds the only
    write end and closes it only after the worker has exited. An orphan stops its run as on SIGTERM
    (its participants leave the server politely, and the engine's handler takes it; a second one from
    PR_SET_PDEATHSIG changes nothing), then exits ORPHAN_EXIT_S later whatever it is doing, having
    removed its files: nobody will read its report.
    """

    def __init__(self, stdin_fd: int, job_path: Path) -> None:
        self.go_at: float | None = None
        self.gone = False
        self.heard = threading.Event()  # "go", or the end of the pipe
        self._fd = stdin_fd
        self._job_path = job_path

    def start(self) -> None:
        threading.Thread(target=self._read, name="lkswarm-parent-link", daemon=True).start()

    def remove_files(self) -> None:
        """Removes this worker's job, stderr and report files, and the job directory once it is empty."""
        directory = self._job_path.parent
        prefix = self._job_path.name.partition(".")[0] + "."  # worker-N.
        with contextlib.suppress(OSError):
            for path in directory.iterdir():
                if path.name.startswith(prefix):
                    path.unlink(missing_ok=True)
            directory.rmdir()  # fails while another worker's files are there: the last one removes it

    def _read(self) -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader holds its lock,
        # and the interpreter aborts at exit when it finds that lock taken.
        pending = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(self._fd, 4096):
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    self._on_line(line.decode(errors="replace").strip())
        self.gone = True
        self.heard.set()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_EXIT_S)
        self.remove_files()
        os._exit(1)

    def _on_line(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "go" and self.go_at is None:
            with contextlib.suppress(ValueError):
                self.go_at = float(rest)
            self.heard.set()


class SampleStream:
    """A worker's observer: each sample as one line for the parent, with its rolling percentiles for
    the live view (``with_rolling``) and its Prometheus figures for ``/metrics`` (``with_exposition``).

    It also says ``alive`` every second until the engine stops it (samples end with the run's clock;
    the room check, leaving and closing come after), then ``ending``: see the module's liveness rule.
    """

    def __init__(self, with_rolling: bool, with_exposition: bool) -> None:
        self._info: RunInfo | None = None
        self._beat: asyncio.Task[None] | None = None
        self.with_rolling = with_rolling
        self.with_exposition = with_exposition

    async def start(self, info: RunInfo) -> None:
        self._info = info
        self._beat = asyncio.get_running_loop().create_task(self._beat_every_second())

    def on_sample(self, snapshot: Snapshot) -> None:
        data = sample_payload(snapshot, self._info, rolling=self.with_rolling, exposition=self.with_exposition)
        _to_parent(SAMPLE_PREFIX + json.dumps(data).encode() + b"\n")

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        _to_parent(ENDING_LINE)

    @staticmethod
    async def _beat_every_second() -> None:
        # From the event loop, not a thread: a blocked loop must fall silent.
        while True:
            await asyncio.sleep(TICK_S)
            _to_parent(ALIVE_LINE)


def _to_parent(line: bytes) -> None:
    with contextlib.suppress(OSError):  # the parent went away: ParentLink sees to it
        os.write(sys.stdout.fileno(), line)
