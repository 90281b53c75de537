"""Both I/O backends of the media thread against the real livekit-server (issue #24).

The hub's worker reads and sends with io_uring (multishot ``recvmsg`` over provided buffers, sends in one
submission) where the kernel allows it, else with epoll, ``recvmmsg`` and ``sendmmsg``
(rust/src/media/hub/io.rs). ``LKSWARM_MEDIA_IO`` forces one, so each runs the same short scenario here:
the report must name the backend it ran, lose nothing, and count its system calls per datagram.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_av_room
from lkswarm import _core
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials

pytestmark = pytest.mark.integration

PARTICIPANTS = 8  # 2 audio publishers and 1 video publisher to every other participant


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
