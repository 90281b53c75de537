"""Holding the embedded livekit-server to a fraction of the machine (``capacity --server-cpus``).

One machine can then show a whole capacity search: a server held to 0.5 cores
reaches its limit long before the generator beside it does. Three ways, in the
order tried; the one used is reported, because they are not equally faithful:

1. **cgroup v2** ``cpu.max`` in a child of our own cgroup, where it is delegated to us.
   The kernel's CFS bandwidth control: the server runs at most ``quota`` per
   ``period`` across all its threads. What a container's ``--cpus`` does.
2. **cgroup v1** ``cpu.cfs_quota_us`` under the ``cpu`` hierarchy, where it is writable
   (root, or a delegated hierarchy). The same mechanism.
3. **SIGSTOP/SIGCONT duty cycle**, everywhere else: the server is stopped for a
   share of every 50 ms period. This bounds its CPU to ``cpus`` only as an upper
   bound (it assumes it could use every core while running), and adds up to one
   period of latency to whatever arrives while it is stopped: coarser, so said.

A limit never outlives its run: the cgroup is removed on `release`, and the duty
cycle is a daemon thread of this process that stops with it (a server left
stopped by a killed lkswarm dies too: it has PR_SET_PDEATHSIG, lkswarm.app.server).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lkswarm.errors import ConfigError

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
DUTY_PERIOD_S = 0.05


@dataclass(slots=True)
class CpuLimit:
    """A CPU limit applied to one process; `release` undoes it."""

    cpus: float
    method: str  # how, in words, for the report
    cgroup: Path | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> dict[str, object]:
        return {"cpus": self.cpus, "method": self.method}

    def release(self) -> None:
        self._stop.set()
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()  # empty once the server has exited; otherwise the kernel refuses, harmlessly
            self.cgroup = None


def parse_cpus(text: str) -> list[float]:
    """``0.5`` or ``0.5,1,2`` (a core sweep) -> [0.5] or [0.5, 1.0, 2.0]; a usage error names a bad part."""
    values: list[float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"--server-cpus: {part.strip()!r} is not a number of cores") from None
        if not 0.01 <= value <= 4096:
            raise ConfigError(f"--server-cpus: {value:g} is outside 0.01 .. 4096 cores")
        values.append(value)
    return values


def limit_cpu(pid: int, cpus: float) -> CpuLimit:
    """Holds process ``pid`` (all its threads, present and future) to ``cpus`` cores."""
    name = f"lkswarm-server-{os.getpid()}-{pid}"
    for attempt in (_cgroup_v2, _cgroup_v1):
        limit = attempt(pid, cpus, name)
        if limit is not None:
            return limit
    return _duty_cycle(pid, cpus)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _own_v2_cgroup() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            relative = line[3:].lstrip("/")
            for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
                if (root / "cgroup.controllers").exists():
                    return root / relative
    return None


def _cgroup_v2(pid: int, cpus: float, name: str) -> CpuLimit | None:
    parent = _own_v2_cgroup()
    if parent is None:
        return None
    try:
        if "cpu" not in (parent / "cgroup.controllers").read_text().split():
            return None
        if "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
            _write(parent / "cgroup.subtree_control", "+cpu")
        group = parent / name
        group.mkdir(exist_ok=True)
    except OSError:
        # Not delegated to us (the usual case outside systemd user slices), or the "no internal
        # processes" rule: fall through to the next way.
        return None
    try:
        _write(group / "cpu.max", f"{round(cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")
        _write(group / "cgroup.procs", str(pid))
    except OSError:  # made, then refused (or the server already gone): leave no empty cgroup behind
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return CpuLimit(cpus, "cgroup v2 cpu.max (CFS bandwidth control)", group)


def _cgroup_v1(pid: int, cpus: float, name: str) -> CpuLimit | None:
    hierarchy = CGROUP_ROOT / "cpu"
    if not (hierarchy / "cpu.cfs_quota_us").exists():
        return None
    group = hierarchy / name
    try:
        group.mkdir(exist_ok=True)
        _write(group / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(group / "cpu.cfs_quota_us", str(round(cpus * CFS_PERIOD_US)))
        _write(group / "cgroup.procs", str(pid))
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return CpuLimit(cpus, "cgroup v1 cpu.cfs_quota_us (CFS bandwidth control)", group)


def _duty_cycle(pid: int, cpus: float) -> CpuLimit:
    cores = len(os.sched_getaffinity(0)) or 1
    running_share = min(1.0, cpus / cores)
    limit = CpuLimit(
        cpus,
        f"SIGSTOP/SIGCONT duty cycle, {running_share:.0%} of every {DUTY_PERIOD_S * 1000:.0f} ms "
        "(no writable cgroup here: an upper bound on the server's CPU, and up to one period of added latency)",
    )
    if running_share >= 1.0:
        return limit

    def cycle() -> None:
        run_s, pause_s = DUTY_PERIOD_S * running_share, DUTY_PERIOD_S * (1 - running_share)
        try:
            while not limit._stop.is_set():
                os.kill(pid, signal.SIGSTOP)
                limit._stop.wait(pause_s)
                os.kill(pid, signal.SIGCONT)
                limit._stop.wait(run_s)
        except ProcessLookupError:
            return
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    threading.Thread(target=cycle, name="lkswarm-cpu-duty-cycle", daemon=True).start()
    return limit
