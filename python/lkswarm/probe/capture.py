"""What a probe sends and how it judges what it receives: aiortc tracks with frame identity, and receive analysis.

Theory of operation
-------------------
Publishing: `ProbeVideoTrack` produces 320x180 yuv420p frames at `VIDEO_FPS`
(a moving test pattern with the `lkswarm.probe.barcode` band on top) and
`ProbeAudioTrack` 20 ms mono 48 kHz frames: a quiet 440 Hz tone with, once
per second, a 100 ms loud 1 kHz burst (the audio marker). aiortc encodes them
(VP8 with libvpx, Opus) like any camera or microphone. Each frame's capture
time (``perf_counter`` when the track hands it to aiortc, i.e. before
encoding) goes into the shared `CaptureRegistry` under the publisher's slot.

Receiving: aiortc decodes each subscribed track; `VideoReceiveStats` reads the
barcode of every decoded frame and looks its capture time up in the registry
(``latency = decoded - captured``, the end-to-end latency including encode,
packetization, the SFU, the jitter buffer and decode). Gaps between decoded
frames over `FREEZE_GAP_S` are freezes; counter jumps are frames that never
decoded. `AudioReceiveStats` counts decoded frames, the audio a receiver would
have had to conceal (holes in the decoded sample timeline: aiortc itself does
no loss concealment), and the marker onsets it hears. A marker carries no
number: it is matched to the latest marker its publisher captured within one
marker period, so audio latency is only unambiguous below `MARKER_PERIOD_S`.

All of this runs on the probe tier's own event loop (see ``lkswarm.probe.tier``).
"""

from __future__ import annotations

import asyncio
import collections
import math
import struct
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from lkswarm.metrics import new_histogram, record_ms
from lkswarm.probe import barcode

VIDEO_WIDTH = 320
VIDEO_HEIGHT = 180
VIDEO_FPS = 15
VIDEO_BITRATE_BPS = 300_000  # announced in AddTrackRequest; aiortc's own rate control decides the real rate
AUDIO_RATE_HZ = 48_000
AUDIO_FRAME_S = 0.02
AUDIO_FRAME_SAMPLES = 960
MARKER_PERIOD_FRAMES = 50  # one marker per second
MARKER_FRAMES = 5  # 100 ms burst
MARKER_PERIOD_S = MARKER_PERIOD_FRAMES * AUDIO_FRAME_S
MARKER_RMS = 2_500.0  # decoded RMS above this is "burst": the burst is ~11 600, the bed tone ~700
FREEZE_GAP_S = 0.5
CAPTURE_HISTORY = 600  # frames remembered per publisher (40 s at 15 fps); older ones cannot be matched
MAX_SCHEDULE_LAG_S = 1.0  # a track this far behind restarts its schedule instead of bursting to catch up


@dataclass(slots=True)
class CaptureLog:
    """Capture times of one probe publisher's frames and audio markers."""

    video: dict[int, float] = field(default_factory=dict)  # counter -> perf_counter at capture
    video_order: collections.deque[int] = field(default_factory=collections.deque)
    markers: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=8))

    def video_captured(self, counter: int, at: float) -> None:
        self.video[counter] = at
        self.video_order.append(counter)
        if len(self.video_order) > CAPTURE_HISTORY:
            self.video.pop(self.video_order.popleft(), None)


class CaptureRegistry:
    """Probe-side truth shared by publishers and subscribers (one process, one clock)."""

    def __init__(self) -> None:
        self.logs: dict[int, CaptureLog] = {}
        self.slot_of_track: dict[str, int] = {}  # track sid -> publisher slot (audio association)

    def log(self, slot: int) -> CaptureLog:
        return self.logs.setdefault(slot, CaptureLog())

    def video_capture(self, slot: int, counter: int) -> float | None:
        log = self.logs.get(slot)
        return None if log is None else log.video.get(counter)

    def latest_marker(self, slot: int, now: float) -> float | None:
        """The capture time of the slot's latest marker within one marker period before ``now``."""
        log = self.logs.get(slot)
        if log is None:
            return None
        for at in reversed(log.markers):
            if at <= now:
                return at if now - at < MARKER_PERIOD_S else None
        return None


def _pattern(index: int) -> bytes:
    """Luma of test-pattern frame ``index``: a scrolling ramp with a moving box (the barcode goes on top)."""
    width, height = VIDEO_WIDTH, VIDEO_HEIGHT
    shift = index * 8
    row = bytes(40 + ((x + shift) * 160 // width) % 160 for x in range(width))
    luma = bytearray(row * height)
    box = height // 5
    left = index * (width - box) // VIDEO_FPS
    top = barcode.band_height(height) + (height - barcode.band_height(height) - box) // 2
    for y in range(top, top + box):
        luma[y * width + left : y * width + left + box] = b"\xeb" * box
    return bytes(luma)


def _audio_cycle() -> list[bytes]:
    """One marker period of mono s16 PCM frames: the burst first, then the bed tone."""
    frames = []
    for index in range(MARKER_PERIOD_FRAMES):
        marker = index < MARKER_FRAMES
        frequency, amplitude = (1000.0, 0.5) if marker else (440.0, 0.03)
        base = index * AUDIO_FRAME_SAMPLES
        samples = (
            round(amplitude * 32_767 * math.sin(2 * math.pi * frequency * (base + n) / AUDIO_RATE_HZ))
            for n in range(AUDIO_FRAME_SAMPLES)
        )
        frames.append(struct.pack(f"<{AUDIO_FRAME_SAMPLES}h", *samples))
    return frames


class _Pacer:
    """Hands out frame ``n`` at ``start + n * period`` (perf_counter clock)."""

    __slots__ = ("count", "period_s", "start")

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.count = 0
        self.start = 0.0

    async def next(self) -> int:
        index = self.count
        self.count += 1
        now = time.perf_counter()
        if index == 0:
            self.start = now
        delay = self.start + index * self.period_s - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -MAX_SCHEDULE_LAG_S:
            self.start = now - index * self.period_s  # saturated: drop the backlog rather than burst it
        return index


class ProbeVideoTrack(MediaStreamTrack):
    """VP8 source: the test pattern with the frame's identity drawn in."""

    kind = "video"
    _patterns: list[bytes] = []
    _chroma = bytes([128]) * (VIDEO_WIDTH * VIDEO_HEIGHT // 4)

    def __init__(self, track_id: str, slot: int, log: CaptureLog) -> None:
        super().__init__()
        self._id = track_id  # becomes the msid track id, which livekit matches to AddTrackRequest.cid
        self.slot = slot
        self.log = log
        self._pacer = _Pacer(1 / VIDEO_FPS)
        warm_up()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.next()
        luma = bytearray(self._patterns[index % VIDEO_FPS])
        counter = index % barcode.COUNTER_MODULO
        barcode.draw(luma, VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_WIDTH, self.slot, counter)
        frame = VideoFrame(VIDEO_WIDTH, VIDEO_HEIGHT, "yuv420p")
        frame.planes[0].update(bytes(luma))
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        frame.pts = index * (90_000 // VIDEO_FPS)
        frame.time_base = VIDEO_TIME_BASE
        self.log.video_captured(counter, time.perf_counter())
        return frame


class ProbeAudioTrack(MediaStreamTrack):
    """Opus source: a bed tone with a loud marker burst once per `MARKER_PERIOD_S`."""

    kind = "audio"
    _cycle: list[bytes] = []

    def __init__(self, track_id: str, log: CaptureLog) -> None:
        super().__init__()
        self._id = track_id
        self.log = log
        self._pacer = _Pacer(AUDIO_FRAME_S)
        warm_up()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.next()
        frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_FRAME_SAMPLES)
        frame.planes[0].update(self._cycle[index % MARKER_PERIOD_FRAMES])
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts = index * AUDIO_FRAME_SAMPLES
        frame.time_base = Fraction(1, AUDIO_RATE_HZ)
        if index % MARKER_PERIOD_FRAMES == 0:
            self.log.markers.append(time.perf_counter())
        return frame


def warm_up() -> None:
    """Renders the shared test pattern and tone once (pure Python: ~15 ms with the GIL held)."""
    if not ProbeVideoTrack._patterns:
        ProbeVideoTrack._patterns = [_pattern(i) for i in range(VIDEO_FPS)]
    if not ProbeAudioTrack._cycle:
        ProbeAudioTrack._cycle = _audio_cycle()


class VideoReceiveStats:
    """One subscribed video track as a probe decodes it."""

    def __init__(self, registry: CaptureRegistry, e2e_ms: Any, track_sid: str = "") -> None:
        self.registry = registry
        self.e2e_ms = e2e_ms  # HdrHistogram shared by the subscribing probe
        self.track_sid = track_sid  # livekit's track sid (aiortc's track id)
        self.ended = False  # aiortc ended the track (unsubscribed, the PeerConnection closed)
        self.closed_at: float | None = None  # when `close` took the run's end as this track's last instant
        self.frames_decoded = 0
        self.frames_identified = 0  # barcode read and capture time known
        self.frames_skipped = 0  # counter jumps: frames captured but never decoded here
        self.freezes = 0
        self.freeze_s = 0.0
        self.first_at = 0.0
        self.last_at = 0.0
        self.size = (0, 0)
        self._last: tuple[int, int] | None = None  # (slot, counter) of the last identified frame

    def on_frame(self, frame: VideoFrame, now: float) -> None:
        if self.frames_decoded == 0:
            self.first_at = now
        else:
            gap = now - self.last_at
            if gap > FREEZE_GAP_S:
                self.freezes += 1
                self.freeze_s += gap
        self.frames_decoded += 1
        self.last_at = now
        self.size = (frame.width, frame.height)
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            return
        plane = frame.planes[0]
        identity = barcode.read(memoryview(plane), frame.width, frame.height, plane.line_size)
        if identity is None:
            return
        slot, counter = identity
        captured = self.registry.video_capture(slot, counter)
        if captured is None:
            return
        self.frames_identified += 1
        record_ms(self.e2e_ms, max(0.0, now - captured) * 1000)
        if self._last is not None and self._last[0] == slot:
            jump = (counter - self._last[1]) % barcode.COUNTER_MODULO
            if 1 < jump < CAPTURE_HISTORY:
                self.frames_skipped += jump - 1
        self._last = identity

    def close(self, now: float, still_published: bool) -> None:
        """The run ends: a track still published whose frames stopped more than `FREEZE_GAP_S` ago is frozen
        to the end. A freeze was counted only when the next frame came, so a video that froze for good
        counted none, and its frame rate ran to its last frame only."""
        if self.ended or not still_published or self.frames_decoded == 0 or self.closed_at is not None:
            return
        gap = now - self.last_at
        if gap > FREEZE_GAP_S:
            self.freezes += 1
            self.freeze_s += gap
            self.closed_at = now

    @property
    def frame_rate_fps(self) -> float:
        span_s = (self.closed_at if self.closed_at is not None else self.last_at) - self.first_at
        return (self.frames_decoded - 1) / span_s if self.frames_decoded > 1 and span_s > 0 else 0.0


class AudioReceiveStats:
    """One subscribed audio track as a probe decodes it."""

    def __init__(self, registry: CaptureRegistry, track_sid: str) -> None:
        self.registry = registry
        self.track_sid = track_sid
        self.frames_decoded = 0
        self.samples_decoded = 0
        self.concealed_samples = 0  # holes in the decoded timeline a player would have to fill
        self.markers_heard = 0
        self.e2e_ms = new_histogram()  # marker capture -> marker onset decoded
        self.first_at = 0.0
        self.last_at = 0.0
        self._next_pts: int | None = None
        self._loud = False

    def on_frame(self, frame: AudioFrame, now: float) -> None:
        if self.frames_decoded == 0:
            self.first_at = now
        self.frames_decoded += 1
        self.samples_decoded += frame.samples
        self.last_at = now
        # The RTP-derived pts is used only for continuity within this one stream, never for identity.
        if frame.pts is not None:
            if self._next_pts is not None and 0 < frame.pts - self._next_pts < AUDIO_RATE_HZ * 10:
                self.concealed_samples += frame.pts - self._next_pts
            self._next_pts = frame.pts + frame.samples
        if frame.format.name != "s16":
            return
        samples = memoryview(frame.planes[0]).cast("h")[: frame.samples * len(frame.layout.channels)]
        decimated = samples[::16]
        rms = math.sqrt(sum(s * s for s in decimated) / max(1, len(decimated)))
        loud = rms > MARKER_RMS
        if loud and not self._loud:
            self.markers_heard += 1
            slot = self.registry.slot_of_track.get(self.track_sid)
            captured = self.registry.latest_marker(slot, now) if slot is not None else None
            if captured is not None:
                record_ms(self.e2e_ms, (now - captured) * 1000)
        self._loud = loud
