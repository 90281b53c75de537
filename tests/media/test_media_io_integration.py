"""Both I/O backends of the media thread against the real livekit-server (issue #24).

The hub's worker reads and sends with io_uring (multishot ``recvmsg`` over provided buffers, sends in one
submission) where the kernel allows it, else with epoll, ``recvmmsg`` and ``sendmmsg``
(rust/src/media/hub/io.rs). ``LKSWARM_MEDIA_IO`` forces one, so each runs the same short scenario here:
the report must name the backend it ran, lose nothing, and count its system calls per datagram. Where
io_uring is refused, the way Docker's default seccomp profile refuses it, the same scenario runs unforced
under a seccomp filter that refuses it so (tests/seccomp_io_uring.py): the hub must fall back to epoll on
its own and the report say why.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_av_room
from lkswarm import _core
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials

pytestmark = pytest.mark.integration

PARTICIPANTS = 8  # 2 audio publishers and 1 video publisher to every other participant
#: Runs a command with io_uring_setup, io_uring_enter and io_uring_register failing with EPERM.
UNDER_DOCKER_SECCOMP = [sys.executable, str(Path(__file__).parents[1] / "seccomp_io_uring.py"), "--"]
SECCOMP_REFUSAL = "io_uring_setup: Operation not permitted (os error 1)"


def io_uring_refused() -> str | None:
    """Why this machine refuses io_uring (Docker's default seccomp profile does), or None."""
    try:
        _core.MediaHub("127.0.0.1", io="io_uring").close()
    except Exception as error:  # any refusal skips, with its reason
        return str(error)
    return None


@pytest.mark.parametrize("backend", ["epoll", "io_uring"])
def test_each_io_backend_carries_the_scenario_without_loss_and_the_report_names_it(
    livekit_server: LocalServer,
    credentials: Credentials,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    if backend == "io_uring" and (refused := io_uring_refused()) is not None:
        pytest.skip(f"io_uring refused here: {refused}")
    monkeypatch.setenv("LKSWARM_MEDIA_IO", backend)
    report = run_av_room(livekit_server.url, credentials, tmp_path, PARTICIPANTS)
    hub = report["media"]["hub"]
    assert hub["io"] == backend and "io_fallback" not in hub, hub
    # Every wakeup makes at least its wait; batching keeps the total below one call per datagram.
    assert hub["syscalls"] >= hub["wakeups"] > 0, hub
    assert hub["syscalls_per_datagram"] > 0, hub
    # The media thread's CPU, a part of the whole process's (which started before the hub and ended after).
    assert 0 < hub["thread_cpu_s"] < report["generator"]["cpu_s"], (hub, report["generator"]["cpu_s"])
    print(backend, hub)


def test_unforced_the_hub_takes_io_uring_where_it_can_and_says_why_not_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LKSWARM_MEDIA_IO", raising=False)
    hub = _core.MediaHub("127.0.0.1")
    try:
        refused = io_uring_refused()
        if refused is None:
            assert (hub.io_backend, hub.io_fallback) == ("io_uring", None)
        else:
            assert hub.io_backend == "epoll" and hub.io_fallback, hub.io_fallback
    finally:
        hub.close()
    with pytest.raises(Exception, match="expected io_uring, epoll or auto"):
        monkeypatch.setenv("LKSWARM_MEDIA_IO", "kqueue")
        _core.MediaHub("127.0.0.1")


def test_the_media_thread_cpu_clock_reads_while_it_runs_and_keeps_its_total_after_close() -> None:
    """The report splits the generator's CPU into the media thread's and the rest (Python's): the hub reads
    its thread's clock from the caller's thread, and after close the total the thread stored as it ended."""
    hub = _core.MediaHub("127.0.0.1")
    closed = False
    try:
        running = hub.thread_cpu_s
        assert running is not None and running >= 0.0
        for _ in range(20):  # a peer's connect deadline makes the thread work a little
            hub.add_peer(connect_timeout_s=0.05)
        time.sleep(0.3)
        later = hub.thread_cpu_s
        assert later is not None and later >= running
        hub.close()
        closed = True
        final = hub.thread_cpu_s
        assert final is not None and final >= later, (running, later, final)
        assert hub.thread_cpu_s == final  # the stored total: the ended thread's clock is never read again
    finally:
        if not closed:
            hub.close()


def test_the_hub_event_descriptor_is_readable_exactly_while_events_wait() -> None:
    """Python takes the hub's events when its descriptor turns readable (media/tier.py), not on a poll, so
    an event must make it readable and taking the events must clear it, or the loop would spin or stall."""
    import select

    hub = _core.MediaHub("127.0.0.1")
    try:
        fd = hub.events_fd()
        assert select.select([fd], [], [], 0)[0] == [], "readable before any event"
        hub.add_peer(connect_timeout_s=0.2)  # no offer ever comes: it fails at its connect deadline
        assert select.select([fd], [], [], 5.0)[0] == [fd], "no wake-up for the peer's failure"
        events = hub.take_events()
        assert [type(event).__name__ for event in events] == ["PeerFailed"], events
        assert select.select([fd], [], [], 0.3)[0] == [], "still readable after the events were taken"
    finally:
        hub.close()


def test_a_hub_under_dockers_seccomp_refusal_falls_back_to_epoll_and_forcing_io_uring_is_an_error() -> None:
    probe = (
        "from lkswarm import _core\n"
        "hub = _core.MediaHub('127.0.0.1'); print(hub.io_backend, '|', hub.io_fallback); hub.close()\n"
        "try:\n"
        "    _core.MediaHub('127.0.0.1', io='io_uring')\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, '|', error)\n"
    )
    out = subprocess.run(
        [*UNDER_DOCKER_SECCOMP, sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    unforced, forced = out.stdout.splitlines()
    assert unforced == f"epoll | {SECCOMP_REFUSAL}"
    assert forced == f"MediaError | io_uring was asked for and refused: {SECCOMP_REFUSAL}"


def test_where_seccomp_refuses_io_uring_the_run_falls_back_to_epoll_loses_nothing_and_the_report_says_why(
    livekit_server: LocalServer,
    credentials: Credentials,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LKSWARM_MEDIA_IO", raising=False)
    report = run_av_room(livekit_server.url, credentials, tmp_path, PARTICIPANTS, prefix=UNDER_DOCKER_SECCOMP)
    hub = report["media"]["hub"]
    assert (hub["io"], hub["io_fallback"]) == ("epoll", SECCOMP_REFUSAL), hub
    assert any(f"io_uring was refused ({SECCOMP_REFUSAL})" in note for note in report["notes"]), report["notes"]
    assert hub["syscalls"] >= hub["wakeups"] > 0, hub
