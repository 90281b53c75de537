"""Single-PeerConnection media (``/rtc/v1``) against the real livekit-server v1.13.5.

The issue's bar: 100 participants in 2 rooms with audio and simulcast video publishers on ``v1`` for 75 s
(past the server's 60 s eviction of participants whose primary PeerConnection never connected), all ACTIVE at
the end, every subscriber receiving every track, and a relay in front of the server that sees only
``GET /rtc/v1?…join_request=…`` upgrades. Then a room that mixes v0 and v1 participants.
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
from relays import HttpRelay

pytestmark = pytest.mark.integration


def test_100_v1_participants_stay_active_and_receive_every_track(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    with HttpRelay(livekit_server.port) as relay:
        config = RunConfig(
            url=relay.url,
            rooms=2,
            participants=50,
            rate=20,
            duration_s=75,
            audio_publishers=2,
            video_publishers=1,
            signal_path="v1",
            run_tag=os.urandom(3).hex(),
        )
        report = run_engine(config, credentials, relay.url)
    p = report["participants"]
    assert p["outcomes"]["completed"] == 100, (p["outcomes"], p["failures"], p["failure_details"])
    assert_outcomes_reconcile(report)
    assert p["active_at_end"] == 100 and report["latency_ms"]["active"]["count"] == 100
    media = report["media"]
    # Every participant receives its room's 3 tracks, except the publishers their own.
    assert media["tracks_received"] == 2 * (50 * 3 - 3), media
    assert media["tracks_missing"] == 0
    assert media["loss_ratio"] < 0.01, media
    by_kind = media["track_subscribed_ms"]
    assert (by_kind["audio"]["count"], by_kind["video"]["count"]) == (2 * 2 * 49, 2 * 49), by_kind
    upgrades = [line for line in relay.request_lines if line.startswith("GET /rtc")]
    assert len(upgrades) == 100
    assert all(line.startswith("GET /rtc/v1?access_token=") and "join_request=" in line for line in upgrades)
    paths = report["signal"]["paths"]
    assert paths["v1"]["participants"] == 100 and paths["v0"]["participants"] == 0
    # The server adds tracks to the one PeerConnection by asking for re-offers (media_sections_requirement):
    # more offers than joins means they ran.
    assert report["signal"]["messages_received"].get("media_sections_requirement", 0) > 0
    assert paths["v1"]["offers_sent"] > 100


def test_v0_and_v1_participants_of_one_room_receive_each_others_tracks(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    config = RunConfig(
        url=livekit_server.url,
        rooms=1,
        participants=8,
        rate=20,
        duration_s=12,
        audio_publishers=2,
        video_publishers=2,
        signal_path="v1:50,v0:50",
        run_tag=os.urandom(3).hex(),
    )
    report = run_engine(config, credentials, livekit_server.url)
    p = report["participants"]
    assert p["outcomes"]["completed"] == 8, (p["failures"], p["failure_details"])
    assert p["active_at_end"] == 8
    paths = report["signal"]["paths"]
    assert paths["v1"]["participants"] == 4 and paths["v0"]["participants"] == 4
    media = report["media"]
    # 4 tracks in the room (seats 0-1 publish video, 2-3 audio); each publisher misses only its own.
    assert media["tracks_received"] == 8 * 4 - 4, media
    assert media["tracks_missing"] == 0
    assert report["latency_ms"]["active_v1"]["count"] == 4 and report["latency_ms"]["active_v0"]["count"] == 4


def test_an_h264_publisher_on_v1_reaches_our_subscribers_and_the_sdk_decodes_it(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    """``--video-codec h264`` on the single PeerConnection packetizes itself (RTP mode: FU-A, packetization-mode
    1). It was tested only in the in-memory loopback; here the server forwards it to our subscribers and the
    official SDK decodes it."""
    from livekit import rtc

    config = RunConfig(
        url=livekit_server.url,
        rooms=1,
        participants=3,
        video_publishers=1,
        video_codec="h264",
        duration_s=14,
        signal_path="v1",
        run_tag=os.urandom(3).hex(),
        verify_rooms=False,
    )
    decoded: dict[str, int] = {"frames": 0}
    codecs: list[str] = []

    async def read(track: Any, publication: Any) -> None:
        codecs.append(publication.mime_type)
        async for _event in rtc.VideoStream(track):
            decoded["frames"] += 1

    async def main() -> dict[str, Any]:
        engine = build_engine(config, credentials, livekit_server.url)
        run = asyncio.create_task(report_of(engine))
        room = rtc.Room()
        readers: list[asyncio.Task[None]] = []

        def subscribed(track: Any, publication: Any, _participant: Any) -> None:
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                readers.append(asyncio.create_task(read(track, publication)))

        room.on("track_subscribed", subscribed)
        await room.connect(livekit_server.url, mint_token(credentials, identity="sdk-h264", room=config.room_name(0)))
        report = await run
        await room.disconnect()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return report

    report = asyncio.run(main())
    assert_outcomes_reconcile(report)
    assert report["participants"]["outcomes"]["completed"] == 3
    media = report["media"]
    assert media["tracks_by_codec"] == {"video/H264": 2} and media["tracks_missing"] == 0, media
    assert media["loss_ratio"] < 0.01, media
    assert codecs and all("h264" in codec.lower() for codec in codecs), codecs
    assert decoded["frames"] >= 60, decoded  # 30 fps for seconds: the SDK's decoder takes our FU-A frames


@pytest.mark.parametrize("signal_path", ["v0", "v1"])
def test_simulcast_subscribers_get_the_high_layer(
    livekit_server: LocalServer, credentials: Credentials, signal_path: str
) -> None:
    """One simulcast publisher (q, h and f: 180p, 360p, 720p) and 4 subscribers that ask for nothing: the
    server forwards its default, the high layer, so each subscriber receives most of what the publisher sends.

    On v1 this failed while our offers carried ``a=msid`` in recvonly sections: the server took one of them
    for the pending track's section and read its absent rids over ``q;h;f``, so every rid mapped to layer 0
    and a subscriber got one of the three streams at random (often the 180p one, about a tenth of the
    bytes). The three layers' bytes split about 1:4:10 here, so the high layer alone is about two thirds."""
    config = RunConfig(
        url=livekit_server.url,
        rooms=1,
        participants=5,
        rate=20,
        duration_s=12,
        video_publishers=1,
        signal_path=signal_path,
        run_tag=os.urandom(3).hex(),
    )
    report = run_engine(config, credentials, livekit_server.url)
    p = report["participants"]
    assert p["outcomes"]["completed"] == 5 and p["active_at_end"] == 5, (p["failures"], p["failure_details"])
    media = report["media"]
    assert media["tracks_received"] == 4 and media["loss_ratio"] == 0.0, media
    share = media["bytes_received"] / 4 / media["bytes_sent"]
    # Forwarding starts at the first key frame after subscribing (up to a second into a 12 s run).
    assert share > 0.45, f"each subscriber received {share:.2f} of the publisher's bytes: not the high layer"


def test_the_official_sdk_and_v1_participants_receive_each_others_media(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    """livekit 1.2.1 (the Rust SDK underneath) publishes audio and video into a room of 4 v1 participants, 2 of
    them publishing: it decodes ours, and each of ours receives its 2 tracks and the room's."""
    from livekit import rtc

    config = RunConfig(
        url=livekit_server.url,
        rooms=1,
        participants=4,
        audio_publishers=1,
        video_publishers=1,
        duration_s=22,
        signal_path="v1",
        run_tag=os.urandom(3).hex(),
        verify_rooms=False,
    )
    decoded = {"audio": 0, "video": 0}

    async def read(track: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            async for _event in rtc.VideoStream(track):
                decoded["video"] += 1
        else:
            async for _event in rtc.AudioStream(track):
                decoded["audio"] += 1

    async def publish(room: Any, stop: asyncio.Event) -> None:
        width, height = 320, 180
        video, audio = rtc.VideoSource(width, height), rtc.AudioSource(48_000, 1)
        camera = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
        await room.local_participant.publish_track(rtc.LocalVideoTrack.create_video_track("cam", video), camera)
        microphone = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("mic", audio), microphone)
        counter, started = 0, time.perf_counter()
        while not stop.is_set():
            shade = bytes([(counter * 7) % 256]) * (width * height) + bytes([128]) * (width * height // 2)
            video.capture_frame(rtc.VideoFrame(width, height, rtc.VideoBufferType.I420, shade))
            for _ in range(3):  # 30 ms of quiet audio per video frame
                await audio.capture_frame(rtc.AudioFrame(bytes(960), 48_000, 1, 480))
            counter += 1
            await asyncio.sleep(max(0.0, started + counter * 0.03 - time.perf_counter()))

    async def main() -> dict[str, Any]:
        engine = build_engine(config, credentials, livekit_server.url)
        run = asyncio.create_task(report_of(engine))
        room = rtc.Room()
        readers: list[asyncio.Task[None]] = []
        room.on("track_subscribed", lambda track, _pub, _p: readers.append(asyncio.create_task(read(track))))
        await room.connect(livekit_server.url, mint_token(credentials, identity="sdk-peer", room=config.room_name(0)))
        stop = asyncio.Event()
        publisher = asyncio.create_task(publish(room, stop))
        deadline = time.monotonic() + 18
        while time.monotonic() < deadline and (decoded["video"] < 60 or decoded["audio"] < 100):
            await asyncio.sleep(0.2)
        report = await run  # the SDK keeps publishing until our participants are done
        stop.set()
        await publisher
        await room.disconnect()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return report

    report = asyncio.run(main())
    assert decoded["video"] >= 60 and decoded["audio"] >= 100, decoded
    p = report["participants"]
    assert p["outcomes"]["completed"] == 4 and p["active_at_end"] == 4, (p["failures"], p["failure_details"])
    media = report["media"]
    # each of the 4 receives the SDK's 2 tracks, and the room's 2 tracks but for its own
    assert media["tracks_received"] == 4 * 2 + (4 * 2 - 2), media
    assert media["tracks_missing"] == 0, media
    assert report["signal"]["paths"]["v1"]["participants"] == 4


@pytest.mark.parametrize("signal_path", ["v0", "v1"])
def test_a_resume_storm_restarts_ice_and_media_flows_again(
    livekit_server: LocalServer, credentials: Credentials, signal_path: str
) -> None:
    """Everyone drops the WebSocket, one after another over a 10 s window, and resumes: on v0 the server restarts
    ICE on the subscriber PeerConnection (its offer, our answer with new credentials); on v1 we offer the
    restart. ``resume`` runs until media flows again, ``resume_signal`` only until the server's reconnect
    response. Every participant ends in exactly one outcome."""
    config = RunConfig(
        url=livekit_server.url,
        rooms=2,
        participants=4,
        rate=20,
        duration_s=22,
        audio_publishers=1,
        reconnect_storm_at_s=6,
        reconnect_storm_window_s=10,
        resume_on_disconnect=True,
        signal_path=signal_path,
        run_tag=os.urandom(3).hex(),
    )
    report = run_engine(config, credentials, livekit_server.url)
    p = report["participants"]
    assert p["outcomes"]["completed"] == 8, (p["failures"], p["failure_details"])
    assert_outcomes_reconcile(report)
    signal, latency, media = report["signal"], report["latency_ms"], report["media"]
    assert signal["storm_dropped"] == signal["resumes_succeeded"] == 8, signal
    # A restart counts only where the credentials changed: on v0 the server's offer brought new ones (our
    # answer then has new ones too); on v1 an answer that kept the old ones would fail ice_restart_rejected.
    assert media["ice_restarts"] == 8, media
    assert latency["resume_signal"]["count"] == 8 and latency["resume"]["count"] == 8, latency
    assert latency["resume"]["p50"] >= latency["resume_signal"]["p50"]  # media comes back after the signal
    assert signal["reconnects_recovered"] == 8
    assert signal["paths"][signal_path]["resumes"] == 8
    assert p["active_at_end"] == 8 and media["tracks_missing"] == 0, media
    assert media["loss_ratio"] < 0.05, media


def test_v1_subscribers_receive_the_tracks_of_publishers_that_replace_others(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    """Churn replaces publishers: the server then reuses a departed track's receive section for a new track.
    It can only if our next offer says recvonly for it again (str0m had taken the answer's inactive), and the
    new track's packets come under the section's old SSRC (pion keeps a sender's SSRC across ReplaceTrack),
    so they must start the new track's accounting. Both failed before: 2 (subscriber, track) pairs missing."""
    config = RunConfig(
        url=livekit_server.url,
        rooms=1,
        participants=8,
        rate=20,
        duration_s=20,
        audio_publishers=2,
        video_publishers=2,
        churn_rate=1.0,
        signal_path="v1",
        run_tag=os.urandom(3).hex(),
    )
    report = run_engine(config, credentials, livekit_server.url)
    p = report["participants"]
    assert p["outcomes"]["failed"] == 0 and p["departed"] >= 15, p
    media = report["media"]
    assert media["tracks_missing"] == 0, media["missing_examples"]
    assert report["media"]["loss_ratio"] < 0.01
    # The peers that left count too: the report's packets are what the timeline's rates add up to (every peer
    # the hub has had), not only the last peers'.
    t_s, per_s = report["timeline"]["t_s"], report["timeline"]["media_packets_per_s"]
    by_timeline = t_s[0] * per_s[0] + sum(per_s[i] * (t_s[i] - t_s[i - 1]) for i in range(1, len(t_s)))
    assert 0.97 * by_timeline <= media["packets_received"] <= 1.1 * by_timeline, (by_timeline, media)
