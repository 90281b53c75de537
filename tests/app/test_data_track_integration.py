"""LiveKit data tracks against the real livekit-server v1.13.5 and the official SDK (issue #21, data tracks).

A room with 2 data-track publishers at 30 Hz and 20 subscribers, on the dual-PC path (``/rtc``: the server
writes on the ``_data_track`` it opened on each subscriber PC) and on the single-PC path (``/rtc/v1``: on the
channel we opened on the one PC): every receiver gets every track, with no loss on loopback and latency
recorded. Then the official ``livekit`` SDK both ways: its track is counted by our receivers under its
identity, and ours reaches it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from helpers import assert_outcomes_reconcile, report_of, run_engine
from lkswarm.app.runner import build_engine
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials, mint_token
from lkswarm.config import RunConfig
from lkswarm.report.html_page import render_html

pytestmark = pytest.mark.integration

RATE_HZ = 30
SIZE_BYTES = 200
PARTICIPANTS = 22  # the bar: 2 publishers at 30 Hz to 20 subscribers


def track_config(url: str, **overrides: Any) -> RunConfig:
    fields: dict[str, Any] = dict(
        url=url,
        rooms=1,
        participants=PARTICIPANTS,
        rate=20,
        duration_s=15,
        data_tracks=2,
        data_track_rate=RATE_HZ,
        data_track_size=SIZE_BYTES,
        run_tag=os.urandom(3).hex(),
    )
    fields.update(overrides)
    return RunConfig(**fields)


@pytest.mark.parametrize("path", ["v0", "v1"])
def test_every_subscriber_receives_every_data_track(
    livekit_server: LocalServer, credentials: Credentials, path: str
) -> None:
    config = track_config(livekit_server.url, signal_path=path)
    report = run_engine(config, credentials, livekit_server.url)
    assert_outcomes_reconcile(report)
    assert report["participants"]["outcomes"]["completed"] == PARTICIPANTS, report["participants"]
    tracks = report["data"]["tracks"]
    assert tracks["tracks_published"] == 2 and tracks["publish_failures"] == 0, tracks
    # 2 tracks at 30 Hz for most of 15 s; each reaches the 21 others (publishers subscribe to each other)
    others = PARTICIPANTS - 1
    assert tracks["frames_sent"] > 2 * RATE_HZ * 10, tracks
    assert tracks["subscriptions"] == 2 * others, tracks
    assert tracks["frames_received"] >= others * tracks["frames_sent"] * 0.9, tracks
    assert tracks["loss_ratio"] < 0.01 and tracks["duplicates"] == 0, tracks
    assert tracks["unknown_handle"] == 0 and tracks["malformed"] == 0, tracks
    assert tracks["bytes_received"] == tracks["frames_received"] * SIZE_BYTES
    latency = report["latency_ms"]["data_track_e2e"]
    assert latency["count"] >= tracks["frames_received"] and 0 < latency["p99"] < 1000, latency
    assert tracks["latency_ms"] == latency
    assert "100 ms" in tracks["note"]
    # The live figures: the timeline (and so the live view and Prometheus) carries the rates; the HTML a table.
    timeline = report["timeline"]
    assert max(timeline["data_track_sent_per_s"]) > 0 and max(timeline["data_track_received_per_s"]) > 0
    page = render_html(report)
    assert 'id="data-tracks"' in page and "data_track_e2e" in page
    figures = (tracks["frames_sent"], tracks["frames_received"], tracks["loss_ratio"], latency["p50"], latency["p99"])
    print(f"{path}: sent, received, loss, p50 ms, p99 ms = {figures}")


def test_the_official_sdk_and_lkswarm_exchange_data_tracks(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    from livekit import rtc

    config = track_config(livekit_server.url, participants=4, duration_s=20, data_tracks=1)
    sdk_received: dict[str, int] = {}
    sdk_sent = 0

    async def main() -> dict[str, Any]:
        nonlocal sdk_sent
        engine = build_engine(config, credentials, livekit_server.url)
        run = asyncio.create_task(report_of(engine))
        await asyncio.sleep(3)  # everyone joined and ACTIVE
        room = rtc.Room()
        readers: list[asyncio.Task[None]] = []

        async def read(track: rtc.RemoteDataTrack) -> None:
            async for _frame in track.subscribe():
                sdk_received[track.publisher_identity] = sdk_received.get(track.publisher_identity, 0) + 1

        room.on("data_track_published", lambda track: readers.append(asyncio.create_task(read(track))))
        token = mint_token(credentials, identity="sdk-peer", room=config.room_name(0))
        await room.connect(livekit_server.url, token)
        local = await room.local_participant.publish_data_track(name="sdk-telemetry")
        started = time.monotonic()
        while time.monotonic() - started < 10:
            local.try_push(rtc.DataTrackFrame(payload=b"sdk frame " + bytes(40)))
            sdk_sent += 1
            await asyncio.sleep(1 / 30)
        await asyncio.sleep(0.5)
        await room.disconnect()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return await run

    report = asyncio.run(main())
    assert report["participants"]["outcomes"]["completed"] == 4, report["participants"]
    tracks = report["data"]["tracks"]
    # Our 4 participants each count the SDK's frames under its identity (foreign: no lkswarm timestamp).
    assert tracks["foreign_frames"] >= 4 * sdk_sent * 0.9, (tracks, sdk_sent)
    # The SDK receives our publisher's track.
    ours = config.identity(0)
    assert sdk_received.get(ours, 0) >= RATE_HZ * 5, sdk_received
    print(f"sdk: sent {sdk_sent}, ours counted {tracks['foreign_frames']}; sdk got {sdk_received}")
