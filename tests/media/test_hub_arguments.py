"""What the hub's Python methods refuse: arguments that would panic a peer, spin or stall the media thread, or
abort the process, each a one-line `MediaError` before anything is built. (The hub binds UDP sockets for its
peers, so these run with the integration tests; no server is involved.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lkswarm import _core
from lkswarm.errors import MediaError

pytestmark = pytest.mark.integration


@pytest.fixture
def hub() -> Iterator[_core.MediaHub]:
    hub = _core.MediaHub("127.0.0.1")
    try:
        yield hub
    finally:
        hub.close()


def test_a_duration_past_what_an_instant_holds_is_refused(hub: _core.MediaHub) -> None:
    """1e19 s passes Duration's own range but overflows `Instant + Duration`: the peer used to fail with
    'panic in the media tier' after the call had returned."""
    with pytest.raises(MediaError, match=r"connect timeout: at most 1e9 s, got 1e19"):
        hub.add_peer(connect_timeout_s=1e19)
    peer, _ = hub.add_peer()
    with pytest.raises(MediaError, match=r"first_after_s: at most 1e9 s"):
        hub.data_slow_reader(peer, 0.001, 0.002, 1e19)
    with pytest.raises(MediaError, match=r"burst_every_s: at most 1e9 s"):
        hub.data_publish(peer, "reliable", 1.0, 100, burst_count=1, burst_every_s=1e12)
    with pytest.raises(MediaError, match=r"frame interval: at most 1e9 s"):
        hub.set_library([(b"\x00" * 10, True)], [], audio_frame_s=1e10)
    assert not [e for e in hub.take_events() if isinstance(e, _core.PeerFailed)], "no peer failed meanwhile"


def test_a_nanosecond_slow_reader_period_is_refused(hub: _core.MediaHub) -> None:
    peer, _ = hub.add_peer()
    with pytest.raises(MediaError, match="must be at least 1ms"):
        hub.data_slow_reader(peer, 1e-9, 2e-9, 0.0)


def test_a_payload_size_past_the_message_limit_is_refused_before_it_is_allocated(hub: _core.MediaHub) -> None:
    """2^45 bytes used to abort the whole process in the allocation (no panic to catch)."""
    peer, _ = hub.add_peer()
    with pytest.raises(MediaError, match="over the 64000 B message limit"):
        hub.data_publish(peer, "reliable", 1.0, 2**45)
