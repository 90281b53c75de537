"""A local livekit-server on 127.0.0.1, started from a generated config.

One launcher serves ``lkswarm server``, the pytest fixture, and the embedded
server that ``lkswarm run`` starts when no ``--url`` is given.

The server lives and dies with us:

- **Its config never touches disk.** The config holds the API secret, so it goes to the
  server in its environment (``LIVEKIT_CONFIG``, readable by this user alone in
  ``/proc/PID/environ``), not in a file a killed run would leave behind, nor as a
  ``--config-body`` argument, which anyone can read in ``ps``. Only its log (which never
  holds the secret) is written, in a private temporary directory; a run killed before it
  could remove that directory leaves it to the next server's start (`sweep_stale_workdirs`).
- **It dies with its parent, even on SIGKILL.** On Linux the child asks the kernel for
  SIGKILL when its parent goes (``PR_SET_PDEATHSIG``, `die_with_parent`). It runs in a
  session of its own, so a Ctrl-C in a terminal reaches us, and we stop it politely.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from lkswarm.auth import Credentials
from lkswarm.errors import PortInUseError, ServerError
from lkswarm.net.twirp import open_direct

HOST = "127.0.0.1"
DEFAULT_PORT = 7880
DEFAULT_UDP_PORT = 7882
SERVER_VERSION = "1.13.5"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CONFIG_ENV = "LIVEKIT_CONFIG"  # livekit-server's --config-body, from the environment


WORKDIR_PREFIX = "lkswarm-server-"
# In a server's work dir: "<launcher pid> <server pid>", locked (flock) by the launcher while it lives.
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie does not (a container's init may never reap the killed run's server)."""
    if not os.path.isdir("/proc/self"):  # no /proc here (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's process
        return True
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return proc_stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


class WorkdirOwner:
    """The launcher's claim on its server's work dir: `OWNER_FILE`, written before the server starts and held
    under an exclusive flock until `release`. The kernel drops the lock when the launcher dies, SIGKILL
    included, and a lock is seen across pid namespaces (two containers sharing /tmp), where a pid is not."""

    def __init__(self, workdir: Path) -> None:
        self._fd: int | None = os.open(workdir / OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
        self.write(os.getpid())

    def write(self, *pids: int) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (" ".join(map(str, pids)) + "\n").encode(), 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the lock


def _owned_by_someone(owner_file: Path) -> bool:
    """Whether a live launcher holds ``owner_file`` (or it cannot be read); else whether its server still runs."""
    try:
        fd = os.open(owner_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # still being set up (or made by an older lkswarm): not ours to judge
    except OSError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True  # its launcher lives
        try:
            pids = [int(word) for word in os.pread(fd, 64, 0).split()]
        except ValueError:
            return True
        # The launcher is gone; its server dies with it (PR_SET_PDEATHSIG), but not on the instant.
        return not pids or any(_alive(pid) for pid in pids[1:])
    finally:
        os.close(fd)


def sweep_stale_workdirs(base: Path | None = None) -> list[Path]:
    """Removes the work dirs of servers whose launcher and server are both gone (a SIGKILLed run cannot clean up
    after itself, and its server's log, megabytes after a long run, stayed in /tmp); returns what it removed.

    Only a directory of ours whose `OWNER_FILE` no live launcher holds is touched (`WorkdirOwner`): one still
    being set up has no such file yet, and one of an older lkswarm is left alone.
    """
    removed: list[Path] = []
    root = base if base is not None else Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for workdir in root.glob(WORKDIR_PREFIX + "*"):
            try:
                info = workdir.lstat()
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            if not _owned_by_someone(workdir / OWNER_FILE):
                shutil.rmtree(workdir, ignore_errors=True)
                if not workdir.exists():
                    removed.append(workdir)
    return removed


def find_binary() -> Path:
    """The livekit-server binary: ``$LKSWARM_SERVER_BIN``, next to the interpreter (the venv), or on PATH."""
    env = os.environ.get("LKSWARM_SERVER_BIN")
    candidates = [Path(env)] if env else []
    candidates.append(Path(sys.executable).parent / "livekit-server")
    found = shutil.which("livekit-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServerError("livekit-server binary not found; run `make build` (it installs .venv/bin/livekit-server)")


PORT_RETRIES = 2  # new ports for a server whose chosen port was taken before it bound it (`LocalServer.start`)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out on 127.0.0.1 (free now, not reserved)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the TCP socket listening on ``port`` (its inode in /proc/net/tcp among the
    process's descriptors); True where /proc cannot say."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as rows:
                for row in list(rows)[1:]:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                        inodes.add(fields[9])
        if not inodes:  # nobody listens there in our view: nothing to tell one listener from another
            return True
        links = (os.readlink(entry) for entry in Path(f"/proc/{pid}/fd").iterdir())
        return any(link.startswith("socket:[") and link[8:-1] in inodes for link in links)
    except (OSError, ValueError, IndexError):
        return True


def check_port_free(port: int, kind: int, what: str) -> None:
    """Raises PortInUseError naming the port if it cannot be bound on 127.0.0.1."""
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            raise PortInUseError(port, what) from None


def loopback_interface() -> str:
    """The loopback device's name (``lo`` on Linux, ``lo0`` on BSD and macOS)."""
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in names if name in ("lo", "lo0")), "lo")


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` with its argument types, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def parent_death_signal(signum: int) -> bool:
    """Asks the kernel to send this process ``signum`` when its parent goes, even on SIGKILL (Linux only).

    Returns False where it cannot. The "parent" is the *thread* that spawned this process: a child
    spawned from a thread that ends gets the signal then, so lkswarm spawns from the main thread.
    """
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def die_with_parent(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``signum`` when this process dies; None where it cannot.

    Only from the main thread: the kernel signals the child when the thread that forked it ends (a
    child started from a short-lived thread would be killed with it); elsewhere the child is stopped
    by its owner alone. The child then checks that its parent is still the one that forked it: a
    parent that died between the fork and the ``prctl`` would never send the signal.
    """
    prctl = _prctl()  # looked up before the fork: the child only calls it
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return in_child


def server_environment(config: dict[str, Any]) -> dict[str, str]:
    """The server's environment: ours without ``LIVEKIT_*`` (livekit-server reads dozens of them as
    settings, and ours may hold the API secret), plus its config in ``LIVEKIT_CONFIG``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIVEKIT_")}
    env[CONFIG_ENV] = json.dumps(config)  # JSON is YAML
    return env


def server_config(
    credentials: Credentials,
    port: int,
    udp_port: int,
    media_interface: tuple[str, str] | None = None,
    metrics_port: int | None = None,
) -> dict[str, Any]:
    """The config the local server runs with (livekit-server notes §6).

    ``media_interface`` (device, address) puts the server's media on that interface alone, for
    impaired probes (lkswarm.probe.netns). The server binds its UDP port once per local address but
    keeps one socket per advertised candidate, chosen in no fixed order when several addresses
    map to the same ``node_ip``; a reply from its 127.0.0.1 socket cannot reach the probes'
    namespace, so there it must have exactly one IPv4 socket, on the gateway. Loopback clients
    (the light tier) reach that address as well. Without impairment the server's media is on the
    loopback device alone, for the same reason.
    """
    config: dict[str, Any] = {
        "port": port,
        "bind_addresses": [HOST],
        "keys": {credentials.api_key: credentials.api_secret},
        "logging": {"level": "info"},
        "rtc": {
            "udp_port": udp_port,
            "tcp_port": 0,
            "use_external_ip": False,
            "node_ip": HOST,
            "enable_loopback_candidate": True,
            # Loopback alone: with a second interface the server may send a run's media from that
            # address instead of the advertised 127.0.0.1 (its choice of socket is per process and
            # random), and every client then pays a peer-reflexive triggered check (one 50 ms ICE
            # pacing interval) before it connects: latency_ms.active p50 58 ms instead of 7 in about
            # one run in five on a two-interface machine.
            "interfaces": {"includes": [loopback_interface()]},
        },
        "room": {"empty_timeout": 30, "departure_timeout": 5},
    }
    if metrics_port is not None:  # Prometheus /metrics on loopback: the report's server section reads it
        config["prometheus"] = {"port": metrics_port}
    if media_interface is not None:
        device, address = media_interface
        config["rtc"].update(node_ip=address, enable_loopback_candidate=False, interfaces={"includes": [device]})
    return config


class LocalServer:
    """A livekit-server child process bound to loopback.

    Use as a context manager, or call `start` and `stop`. The config (which holds
    the secret) goes to the server in its environment, never to a file or the log
    (see the module's docstring); the log is in a private temporary directory.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        port: int | None = None,
        udp_port: int | None = None,
        binary: Path | None = None,
        log_path: Path | None = None,
        media_interface: tuple[str, str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.credentials = credentials
        self.media_interface = media_interface
        # Merged over the generated config, one level deep per section (e.g. {"room": {"max_participants": 12}}).
        self.extra_config = extra_config or {}
        self.port = port if port is not None else free_port()
        self.udp_port = udp_port if udp_port is not None else free_port(socket.SOCK_DGRAM)
        self.metrics_port = free_port()  # its Prometheus endpoint (lkswarm.observe.server_metrics)
        # The ports we chose (free when asked, not reserved): another process may take one before the server
        # binds it, and then they are chosen again (`start`); a port the caller gave is its own to answer for.
        self._chosen = (port is None, udp_port is None)
        self.binary = binary
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._owner: WorkdirOwner | None = None
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 30.0) -> None:
        """Starts the server and waits until ``GET /`` answers 200. A port we chose that another process took
        meanwhile ("address already in use" as the server exits) is chosen again, at most twice."""
        for attempt in range(PORT_RETRIES + 1):
            try:
                self._start_once(timeout_s)
                return
            except ServerError as exc:
                if attempt == PORT_RETRIES or not self._lost_a_chosen_port(exc):
                    raise
                self.stop()
                self._choose_ports_again()

    def _lost_a_chosen_port(self, exc: ServerError) -> bool:
        """Whether ``exc`` says a port was taken that we chose (not one the caller gave)."""
        if isinstance(exc, PortInUseError):
            chose_port, chose_udp_port = self._chosen
            return (chose_port and exc.port == self.port) or (chose_udp_port and exc.port == self.udp_port)
        return "address already in use" in str(exc).lower()

    def _choose_ports_again(self) -> None:
        chose_port, chose_udp_port = self._chosen
        if chose_port:
            self.port = free_port()
        if chose_udp_port:
            self.udp_port = free_port(socket.SOCK_DGRAM)
        self.metrics_port = free_port()

    def _start_once(self, timeout_s: float) -> None:
        binary = self.binary or find_binary()
        check_port_free(self.port, socket.SOCK_STREAM, "signaling, TCP")
        check_port_free(self.udp_port, socket.SOCK_DGRAM, "media, UDP")
        sweep_stale_workdirs()
        self._workdir = tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX)
        self._owner = WorkdirOwner(Path(self._workdir.name))  # before the server: a kill from here on is swept
        config = server_config(self.credentials, self.port, self.udp_port, self.media_interface, self.metrics_port)
        for section, value in self.extra_config.items():
            if isinstance(value, dict) and isinstance(config.get(section), dict):
                config[section] = {**config[section], **value}
            else:
                config[section] = value
        if self.log_path is None:
            self.log_path = Path(self._workdir.name) / "livekit-server.log"
        log = self.log_path.open("wb")
        try:
            self._process = subprocess.Popen(
                [str(binary)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(config),
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server
                # SIGKILL: a server left without its parent has nothing to drain or save. The hook only
                # calls prctl and getppid, which take no lock another thread could hold at the fork.
                preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509
            )
        finally:
            log.close()
        # Who owns the work dir, for a later run's sweep should this process be killed before `stop`.
        self._owner.write(os.getpid(), self._process.pid)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerError(f"livekit-server exited with code {self._process.returncode}: {self.log_tail()}")
            # Ours, not a server that took the port we chose: ours then exits ("address already in use"), and a
            # run would go to the other one, with other keys.
            if self.healthy() and listens_on(self._process.pid, self.port):
                return
            time.sleep(0.05)
        tail = self.log_tail()  # before stop(), which removes the log with its temporary folder
        self.stop()
        raise ServerError(f"livekit-server did not become ready within {timeout_s:.0f} s: {tail}")

    def healthy(self) -> bool:
        # Imported here: urllib.request brings http.client and email (about 10 ms), which a run
        # against an external server (`--url`) never needs.
        import urllib.error

        # Straight to our own child on loopback: an http_proxy in the environment (urlopen honours it, and does
        # not bypass 127.0.0.1 unless no_proxy says so) sent the check to the proxy and it never passed.
        try:
            with open_direct(self.http_url + "/", 1.0, None) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def death_note(self) -> str | None:
        """One line when the server exited on its own (call before `stop`, which also removes its log), else
        None: a run against a server that died mid-way otherwise showed only its participants' failures."""
        if self._process is None or self._process.poll() is None:
            return None
        tail = " | ".join(self.log_tail(3).splitlines())
        return f"the embedded livekit-server exited during the run (code {self._process.returncode}): {tail}"

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return self.credentials.redact("\n".join(text)) or "(empty log)"

    def kill(self) -> None:
        """Kills the server at once (for failure tests)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the server: SIGTERM, then (it drains while participants remain) a second signal, then SIGKILL."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=min(2.0, timeout_s))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._workdir is not None:
            # Keep the log if the caller asked for one outside the work dir.
            if self._owner is not None:
                self._owner.release()
                self._owner = None
            self._workdir.cleanup()
            self._workdir = None
            if self.log_path is not None and not self.log_path.exists():
                self.log_path = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
