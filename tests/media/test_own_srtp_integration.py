"""The subscribers' two SRTP receive paths against the real livekit-server (issue #24).

A steady stream's packets are received on lkswarm's own path (rust/src/media/peer/own_srtp.rs: parse,
replay window, AES-GCM open, a receipt to str0m for its receiver reports and TWCC); str0m receives each
stream's first packet, RTX and anything the own path does not recognise. ``LKSWARM_SRTP_RX=str0m`` turns
the own path off (the A/B switch). Both must carry the same scenario without loss, and the report's
``media.srtp_receive`` must say which path carried the packets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_av_room
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.media.totals import STR0M_DROP_REASONS

pytestmark = pytest.mark.integration

PARTICIPANTS = 8  # 2 audio publishers and 1 video publisher (simulcast) to every other participant


@pytest.mark.parametrize("path", ["own", "str0m"])
def test_each_srtp_receive_path_carries_audio_and_video_without_loss_and_the_report_says_which(
    livekit_server: LocalServer,
    credentials: Credentials,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    monkeypatch.setenv("LKSWARM_SRTP_RX", path)
    media = run_av_room(livekit_server.url, credentials, tmp_path, PARTICIPANTS)["media"]
    srtp = media["srtp_receive"]
    assert srtp["replayed"] == 0 and srtp["too_old"] == 0 and srtp["auth_failed"] == 0, srtp
    # What str0m's path consumed without media, by reason: nothing forged, malformed or of unknown codec
    # on loopback. Duplicates, unknown streams and RTX padding (the server's probes) may occur.
    dropped = srtp["str0m_dropped"]
    assert set(dropped) == set(STR0M_DROP_REASONS), dropped
    assert dropped["auth_failed"] == dropped["malformed"] == dropped["unknown_payload_type"] == 0, dropped
    print(path, srtp)
    assert srtp["own_packets"] + srtp["str0m_packets"] == media["packets_received"], srtp
    if path == "own":
        # Only each stream's first packet (and any RTX) is str0m's.
        assert srtp["own_packets"] >= 0.95 * media["packets_received"] and not srtp["peers_off"], srtp
    else:
        assert srtp["own_packets"] == 0, srtp
        assert srtp["peers_off"] == {"disabled by LKSWARM_SRTP_RX=str0m": PARTICIPANTS}, srtp
