"""The probe tier (aiortc, real codecs) against the real livekit-server: scale, SDK interop both ways, bad input."""

from __future__ import annotations

import asyncio
import math
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    assert_outcomes_reconcile,
    dead_candidates,
    probe_tier,
    report_of,
    run_cli,
    run_engine,
    wrong_fingerprint,
)
from lkswarm.app.runner import build_engine
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials, mint_token
from lkswarm.config import RunConfig
from lkswarm.engine.engine import Engine
from lkswarm.probe import barcode
from lkswarm.probe.tier import ProbeLeg

SDK_SLOT = 200  # barcode slot the SDK publisher draws (probes use 0 ..)

pytestmark = pytest.mark.integration  # the real livekit-server (or the network) throughout


def test_30_participants_and_4_probes_measure_end_to_end_latency(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    """The issue's scale bar: 34 participants in one room, 4 of them probes, 45 s."""
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "34", "--probes", "4"]
    args += ["--rate", "20", "--duration", "45s"]
    code, report, stderr = run_cli(args, credentials, tmp_path, timeout_s=150)
    assert code == 0, stderr
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["outcomes"]["completed"] == 34, p
    assert p["active_at_end"] == 34, p
    e2e = report["latency_ms"]["media_e2e"]
    assert e2e["count"] >= 100, e2e
    assert 0 < e2e["p50"] < 500, e2e
    probes = report["probes"]
    assert probes["count"] == 4 and probes["active_at_end"] == 4 and probes["failed"] == 0, probes
    assert probes["frames_decoded"] >= 200, probes
    assert probes["video_tracks"] == 4 * 3  # every probe decodes the 3 other probes
    assert probes["frames_identified"] >= 0.9 * probes["frames_decoded"], probes
    assert probes["frame_rate_fps"]["mean"] > 5, probes
    # A loss on a busy machine can cost a frame its reference; it must stay rare, not be impossible.
    assert probes["decode_errors"] <= 0.01 * probes["frames_decoded"], probes
    audio = probes["audio"]
    assert audio["tracks"] == 4 * 3 and audio["frames_decoded"] > 1000, audio
    assert audio["loss_ratio"] < 0.05 and audio["markers_heard"] >= 4 * 3 * 20, audio
    assert 0 < audio["marker_latency_ms"]["p50"] < 500, audio
    assert probes["cpu_s"] > 0 and report["generator"]["cpu_s"] > 0
    assert len(probes["per_probe"]) == 4 and all(row["outcome"] == "active" for row in probes["per_probe"])
    for row in probes["per_probe"]:  # where each PeerConnection stood at the end
        states = row["peer_connections"]
        assert set(states) == {"subscriber", "publisher"}, row
        assert all(s["ice"] in ("connected", "completed") and s["connection"] == "connected" for s in states.values())
    # The 30 light participants receive the probes' 8 tracks like any other.
    media = report["media"]
    assert media["tracks_received"] == 30 * 8 and media["tracks_missing"] == 0, media


def test_with_h264_probes_and_light_publishers_measure_it_end_to_end(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    """--video-codec h264 reaches every publisher: probes encode H.264 (libx264 in aiortc), a light
    publisher sends its H.264 clips, and the barcodes survive H.264 at the probes' bitrate."""
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "5", "--probes", "2"]
    args += ["--video-publishers", "1", "--video-codec", "h264", "--duration", "20s"]
    code, report, stderr = run_cli(args, credentials, tmp_path, timeout_s=90)
    assert code == 0, stderr
    probes = report["probes"]
    assert probes["active_at_end"] == 2 and probes["failed"] == 0, probes
    # Each probe decodes the other probe and the light publisher: 2 video tracks each.
    assert probes["video_tracks"] == 2 * 2 and probes["decode_errors"] == 0, probes
    assert probes["frames_identified"] >= 2 * 100, probes  # 15 fps from each other probe, barcodes read
    assert report["latency_ms"]["media_e2e"]["count"] >= 200
    # The light participants (one of them the publisher) receive H.264 from all three video publishers.
    media = report["media"]
    assert media["tracks_by_codec"]["video/H264"] == 2 * 3 + 2, media["tracks_by_codec"]
    assert "video/VP8" not in media["tracks_by_codec"] and media["tracks_missing"] == 0, media


def _sdk_picture(width: int, height: int, counter: int) -> bytes:
    """An I420 picture with our barcode: what the SDK publishes so a probe can time it."""
    luma = bytearray([128]) * (width * height)
    barcode.draw(luma, width, height, width, SDK_SLOT, counter)
    return bytes(luma) + bytes([128]) * (width * height // 2)


def _sdk_tone(index: int, samples: int = 480) -> bytes:
    base = index * samples
    return struct.pack(
        f"<{samples}h", *(round(8000 * math.sin(2 * math.pi * 440 * (base + n) / 48_000)) for n in range(samples))
    )


def test_official_sdk_and_probe_decode_each_other(livekit_server: LocalServer, credentials: Credentials) -> None:
    """The livekit SDK publishes barcoded video + audio that our probe decodes and times, and decodes the probe's."""
    from livekit import rtc

    config = RunConfig(
        url=livekit_server.url,
        rooms=1,
        participants=1,
        probes=1,
        duration_s=25,
        run_tag=f"probeinterop{os.getpid()}",
        verify_rooms=False,
    )
    sdk_seen = {"video": 0, "audio": 0, "barcodes": 0}

    async def read_video(track: Any) -> None:
        async for event in rtc.VideoStream(track):
            frame = event.frame.convert(rtc.VideoBufferType.I420)
            sdk_seen["video"] += 1
            luma = bytes(frame.data[: frame.width * frame.height])
            if barcode.read(luma, frame.width, frame.height, frame.width) is not None:
                sdk_seen["barcodes"] += 1

    async def read_audio(track: Any) -> None:
        async for _event in rtc.AudioStream(track):
            sdk_seen["audio"] += 1

    async def publish(engine: Engine, room: Any, stop: asyncio.Event) -> None:
        width, height = 640, 360
        video = rtc.VideoSource(width, height)
        audio = rtc.AudioSource(48_000, 1)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
        await room.local_participant.publish_track(rtc.LocalVideoTrack.create_video_track("cam", video), options)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("mic", audio), options)
        log = probe_tier(engine).registry.log(SDK_SLOT)  # the same capture-time registry the probes use
        counter, started = 0, time.perf_counter()
        while not stop.is_set():
            log.video_captured(counter, time.perf_counter())
            video.capture_frame(
                rtc.VideoFrame(width, height, rtc.VideoBufferType.I420, _sdk_picture(width, height, counter))
            )
            for k in range(6):  # 60 ms of audio per 1/15 s video frame, in 10 ms frames
                await audio.capture_frame(rtc.AudioFrame(_sdk_tone(counter * 6 + k), 48_000, 1, 480))
            counter += 1
            await asyncio.sleep(max(0.0, started + counter / 15 - time.perf_counter()))

    async def main() -> dict[str, Any]:
        engine = build_engine(config, credentials, livekit_server.url)
        run = asyncio.create_task(report_of(engine))
        room = rtc.Room()
        readers: list[asyncio.Task[None]] = []

        def on_track(track: Any, _publication: Any, _participant: Any) -> None:
            reader = read_video if track.kind == rtc.TrackKind.KIND_VIDEO else read_audio
            readers.append(asyncio.create_task(reader(track)))

        room.on("track_subscribed", on_track)
        await room.connect(livekit_server.url, mint_token(credentials, identity="sdk-peer", room=config.room_name(0)))
        stop = asyncio.Event()
        publisher = asyncio.create_task(publish(engine, room, stop))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (sdk_seen["video"] < 60 or sdk_seen["audio"] < 100):
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(0.0, deadline - 4 - time.monotonic()))  # let the probe decode a while too
        stop.set()
        await publisher
        report = await run
        await room.disconnect()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return report

    report = asyncio.run(main())
    # SDK -> probe: decoded, and the barcode survived libwebrtc's encoder and simulcast scaler.
    probes = report["probes"]
    assert report["participants"]["outcomes"]["completed"] == 1, report["participants"]
    assert probes["video_tracks"] == 1 and probes["frames_decoded"] >= 60, probes
    assert probes["frames_identified"] >= 30, probes
    assert report["latency_ms"]["media_e2e"]["count"] >= 30
    assert 0 < report["latency_ms"]["media_e2e"]["p50"] < 500
    assert probes["audio"]["tracks"] == 1 and probes["audio"]["frames_decoded"] >= 100, probes
    assert probes["decode_errors"] <= 0.01 * probes["frames_decoded"], probes
    # Probe -> SDK: libwebrtc decodes our VP8 and Opus, and reads the probe's barcode.
    assert sdk_seen["video"] >= 60 and sdk_seen["audio"] >= 100, sdk_seen
    assert sdk_seen["barcodes"] >= 0.8 * sdk_seen["video"], sdk_seen


def test_a_failed_probe_peer_connection_fails_that_probe_only(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    """A probe whose DTLS fails and one whose ICE never connects are failed with reasons; the run goes on."""
    config = RunConfig(
        url=livekit_server.url,
        rooms=1,
        participants=6,
        probes=3,
        duration_s=18,
        rate=10,
        media_connect_timeout_s=6,
        run_tag=f"badprobe{os.getpid()}",
        verify_rooms=False,
    )

    def bad_offer(participant: ProbeLeg, sdp: str) -> str:
        if participant.slot == 0:  # the server's certificate will not match the fingerprint it offered
            return wrong_fingerprint(sdp)
        return dead_candidates(sdp) if participant.slot == 1 else sdp

    def setup(engine: Engine) -> None:
        probes = probe_tier(engine)
        probes.offer_filter = bad_offer
        probes.answer_filter = lambda p, sdp: dead_candidates(sdp) if p.slot == 1 else sdp
        probes.trickle_filter = lambda p, candidate: None if p.slot == 1 else candidate

    report = run_engine(config, credentials, livekit_server.url, setup)
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["outcomes"]["failed"] == 2, p
    assert set(p["failures"]) == {"probe_dtls_failed", "probe_connect_timeout"}, p["failures"]
    assert p["outcomes"]["completed"] == 4 and p["active_at_end"] == 4, p
    probes = report["probes"]
    assert probes["failed"] == 2 and probes["active_at_end"] == 1, probes
    reasons = {failure["reason"]: failure["detail"] for failure in probes["failures"]}
    assert set(reasons) == {"probe_dtls_failed", "probe_connect_timeout"}
    assert all("PeerConnection" in detail for detail in reasons.values()), reasons
    assert {row["outcome"] for row in probes["per_probe"]} == {
        "failed:probe_dtls_failed",
        "failed:probe_connect_timeout",
        "active",
    }
    assert credentials.api_secret not in str(report)
