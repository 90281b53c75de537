"""The probe tier's frame identity without sockets: bits, drawing, reading, and a real VP8 round trip."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction

import av
import pytest

from lkswarm.probe import barcode
from lkswarm.probe.capture import (
    MARKER_PERIOD_FRAMES,
    VIDEO_FPS,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    AudioReceiveStats,
    CaptureRegistry,
    ProbeAudioTrack,
    ProbeVideoTrack,
    VideoReceiveStats,
)


def test_bits_round_trip_and_crc_rejects_every_single_bit_flip() -> None:
    for slot, counter in [(0, 0), (1, 1), (255, 65535), (17, 40_000), (128, 12345)]:
        bits = barcode.encode_bits(slot, counter)
        assert len(bits) == barcode.BITS
        assert barcode.decode_bits(bits) == (slot, counter)
        for flipped in range(barcode.BITS):
            damaged = list(bits)
            damaged[flipped] ^= 1
            assert barcode.decode_bits(damaged) is None
    assert barcode.encode_bits(2, 65536 + 5) == barcode.encode_bits(2, 5)  # the counter wraps
    with pytest.raises(ValueError):
        barcode.encode_bits(256, 0)


def test_crc8_matches_the_smbus_check_value() -> None:
    assert barcode.crc8(b"123456789") == 0xF4


def draw_frame(width: int, height: int, slot: int, counter: int, fill: int = 128) -> bytearray:
    luma = bytearray([fill]) * (width * height)
    barcode.draw(luma, width, height, width, slot, counter)
    return luma


@pytest.mark.parametrize(("width", "height"), [(320, 180), (640, 360), (1280, 720), (160, 90)])
def test_draw_then_read_at_several_sizes(width: int, height: int) -> None:
    luma = draw_frame(width, height, 9, 4321)
    assert barcode.read(luma, width, height, width) == (9, 4321)


def test_read_honours_a_padded_stride_and_rejects_pictures_without_a_barcode() -> None:
    width, height, stride = 320, 180, 384
    luma = bytearray([128]) * (stride * height)
    barcode.draw(luma, width, height, stride, 3, 77)
    assert barcode.read(luma, width, height, stride) == (3, 77)
    gray = bytes([128]) * (width * height)
    assert barcode.read(gray, width, height, width) is None
    ramp = bytes(x * 255 // width for x in range(width)) * height  # the light tier's kind of picture
    assert barcode.read(ramp, width, height, width) is None
    assert barcode.read(b"\x00" * 64, 8, 8, 8) is None  # too small to hold one


def _scale(luma: bytes, width: int, height: int, factor: int) -> bytes:
    """Box-filter downscale (what a smaller simulcast layer looks like)."""
    out = bytearray()
    for y in range(0, height, factor):
        for x in range(0, width, factor):
            total = sum(luma[(y + dy) * width + x + dx] for dy in range(factor) for dx in range(factor))
            out.append(total // (factor * factor))
    return bytes(out)


def test_a_half_size_copy_still_reads() -> None:
    luma = draw_frame(320, 180, 200, 65000)
    assert barcode.read(_scale(bytes(luma), 320, 180, 2), 160, 90, 160) == (200, 65000)


def test_barcode_survives_a_real_vp8_encode_and_decode_at_320x180_and_low_bitrate() -> None:
    """libvpx at 150 kbps (the lowest simulcast layer's rate), realtime settings, a moving pattern under it."""

    async def frames() -> list[av.VideoFrame]:
        registry = CaptureRegistry()
        track = ProbeVideoTrack("cam", 5, registry.log(5))
        track._pacer.period_s = 0  # no pacing in a unit test
        return [await track.recv() for _ in range(45)]

    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = VIDEO_WIDTH, VIDEO_HEIGHT, "yuv420p"
    encoder.time_base = Fraction(1, VIDEO_FPS)
    encoder.bit_rate = 150_000
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    decoder = av.CodecContext.create("libvpx", "r")
    decoded: list[tuple[int, int] | None] = []
    for index, frame in enumerate(asyncio.run(frames())):
        frame.pts = index
        frame.time_base = Fraction(1, VIDEO_FPS)
        for packet in encoder.encode(frame):
            for out in decoder.decode(packet):
                plane = out.planes[0]
                decoded.append(barcode.read(memoryview(plane), out.width, out.height, plane.line_size))
                # ... and after a 2x downscale of the decoded picture.
                small = _scale(bytes(plane)[: plane.line_size * out.height], plane.line_size, out.height, 2)
                half = barcode.read(small, plane.line_size // 2, out.height // 2, plane.line_size // 2)
                if plane.line_size == out.width:
                    assert half == decoded[-1]
    assert len(decoded) >= 40
    # Every decoded frame reads back exactly; none is misread.
    assert decoded == [(5, i) for i in range(len(decoded))]


def test_receive_stats_match_capture_times_count_freezes_and_skips() -> None:
    registry = CaptureRegistry()
    log = registry.log(1)
    from lkswarm.metrics import new_histogram

    e2e = new_histogram()
    stats = VideoReceiveStats(registry, e2e)
    t0 = 1000.0
    for counter in [0, 1, 2, 5, 6]:  # 3 and 4 never arrive; 5 arrives after a 0.7 s freeze
        log.video_captured(counter, t0 + counter / 15)
    for counter, decoded_at in [(0, 0.05), (1, 0.12), (2, 0.19), (5, 0.89), (6, 0.45 + 0.5)]:
        frame = av.VideoFrame(320, 180, "yuv420p")
        frame.planes[0].update(bytes(draw_frame(320, 180, 1, counter)))
        stats.on_frame(frame, t0 + decoded_at)
    assert stats.frames_decoded == 5
    assert stats.frames_identified == 5
    assert stats.frames_skipped == 2
    assert stats.freezes == 1
    assert e2e.get_total_count() == 5
    assert 40 <= e2e.get_min_value() / 1000 <= 60  # 0.05 - 0/15 s = 50 ms, at microsecond resolution


def test_a_video_that_freezes_for_good_counts_one_freeze_to_the_end_unless_its_track_is_gone() -> None:
    """5 s at 15 fps and then nothing until the run ends at 45 s read freezes 0 and 15 fps."""

    def fed(track_sid: str = "TR_v") -> VideoReceiveStats:
        from lkswarm.metrics import new_histogram

        stats = VideoReceiveStats(CaptureRegistry(), new_histogram(), track_sid)
        for k in range(76):  # 0 .. 5 s
            stats.on_frame(av.VideoFrame(64, 64, "gray"), 1000.0 + k / 15)
        return stats

    frozen = fed()
    frozen.close(1045.0, still_published=True)
    assert (frozen.freezes, round(frozen.freeze_s)) == (1, 40)
    assert 1.6 < frozen.frame_rate_fps < 1.8, frozen.frame_rate_fps  # 75 frame intervals over 45 s, not 15 fps
    frozen.close(1046.0, still_published=True)
    assert frozen.freezes == 1, "closed once"
    unpublished = fed()
    unpublished.close(1045.0, still_published=False)  # the publisher left: its silence is no freeze
    assert unpublished.freezes == 0 and round(unpublished.frame_rate_fps) == 15
    ended = fed()
    ended.ended = True
    ended.close(1045.0, still_published=True)
    assert ended.freezes == 0
    flowing = fed()
    flowing.close(1005.2, still_published=True)  # the last frame 0.2 s ago: no freeze
    assert flowing.freezes == 0


def test_audio_markers_are_heard_once_per_period_and_holes_count_as_concealment() -> None:
    registry = CaptureRegistry()
    registry.slot_of_track["TR_a"] = 2

    async def frames() -> list[av.AudioFrame]:
        track = ProbeAudioTrack("mic", registry.log(2))
        track._pacer.period_s = 0
        return [await track.recv() for _ in range(2 * MARKER_PERIOD_FRAMES)]

    stats = AudioReceiveStats(registry, "TR_a")
    captured = list(registry.log(2).markers)
    sent = asyncio.run(frames())
    captured = list(registry.log(2).markers)
    assert len(captured) == 2
    for index, frame in enumerate(sent):
        if index == 20:
            continue  # one lost 20 ms frame
        stats.on_frame(frame, captured[0] + 0.1 + index * 0.02)
    assert stats.frames_decoded == 2 * MARKER_PERIOD_FRAMES - 1
    assert stats.concealed_samples == 960
    assert stats.markers_heard == 2
    assert stats.e2e_ms.get_total_count() >= 1
    assert math.isclose(stats.e2e_ms.get_min_value() / 1000, 100, abs_tol=1)
