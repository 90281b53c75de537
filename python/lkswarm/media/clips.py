"""The synthetic media publishers loop: VP8 or H.264 simulcast layers and Opus, encoded once with PyAV and cached.

Frames are real codec output (libvpx or libx264, libopus), so any client, the official
SDK included, can decode what a synthetic publisher sends. Encoding happens on
first use and is cached under ``~/.cache/lkswarm/clips`` (or
``$LKSWARM_CACHE_DIR/clips``); later runs only read the file.

Video: a scrolling test pattern with a moving box, 30 fps, 2 s per loop, with a
keyframe only at frame 0 of each layer, so a keyframe request is answered by
rewinding (the next frame sent is a keyframe). Layers follow LiveKit's default
presets, as ``lk`` publishes them: 320x180 at 150 kbps (q), 640x360 at 400 kbps
(h), 1280x720 at 2 Mbps (f). H.264 is constrained baseline (what browsers and
LiveKit's SDKs offer first: profile-level-id 42e01f) in Annex B, with SPS and PPS
in the keyframe, so rewinding to frame 0 is a full decoder refresh.

Audio: Opus, 48 kHz mono, 20 ms frames, about 32 kbps, of a modulated tone
(so packet sizes vary as speech would, unlike digital silence).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from lkswarm.errors import MediaError

VIDEO_FPS = 30
VIDEO_LOOP_FRAMES = 60
AUDIO_FRAME_S = 0.02
AUDIO_LOOP_FRAMES = 250  # 5 s
AUDIO_BITRATE_BPS = 32_000
CLIP_FORMAT = 1
VIDEO_CODECS = ("vp8", "h264")


@dataclass(frozen=True, slots=True)
class VideoLayer:
    rid: str
    width: int
    height: int
    bitrate_bps: int
    quality: int  # livekit VideoQuality: LOW 0, MEDIUM 1, HIGH 2


LAYERS = (
    VideoLayer("q", 320, 180, 150_000, 0),
    VideoLayer("h", 640, 360, 400_000, 1),
    VideoLayer("f", 1280, 720, 2_000_000, 2),
)

Frames = list[tuple[bytes, bool]]  # (encoded frame, is keyframe)


@dataclass(frozen=True, slots=True)
class MediaClips:
    audio: Frames
    video_layers: list[Frames]  # lowest first
    layers: tuple[VideoLayer, ...]
    video_codec: str = "vp8"


def cache_dir() -> Path:
    base = os.environ.get("LKSWARM_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "lkswarm"
    return root / "clips"


def _pattern_planes(width: int, height: int, index: int) -> tuple[bytes, bytes, bytes]:
    """One yuv420p test-pattern frame: scrolling luma ramp, a moving bright box, tinted chroma."""
    shift = index * 4
    row = bytes(((x + shift) * 255 // max(1, width - 1)) & 0xFF for x in range(width))
    luma = bytearray(row * height)
    box = max(8, height // 6)
    left = (index * (width - box) // VIDEO_LOOP_FRAMES) % max(1, width - box)
    top = (height - box) // 2
    white = b"\xeb" * box
    for y in range(top, top + box):
        luma[y * width + left : y * width + left + box] = white
    chroma_w, chroma_h = width // 2, height // 2
    u = bytes([(96 + index) & 0xFF]) * (chroma_w * chroma_h)
    v = bytes([(160 - index) & 0xFF]) * (chroma_w * chroma_h)
    return bytes(luma), u, v


def _encode_video_layer(layer: VideoLayer, video_codec: str = "vp8") -> Frames:
    frames = encode_pattern(video_codec, layer.width, layer.height, VIDEO_FPS, layer.bitrate_bps, VIDEO_LOOP_FRAMES)
    if len(frames) != VIDEO_LOOP_FRAMES or not frames[0][1]:
        raise MediaError(f"{video_codec} produced {len(frames)} frames for {layer.rid} (wanted {VIDEO_LOOP_FRAMES})")
    return frames


def encode_pattern(video_codec: str, width: int, height: int, fps: int, bitrate_bps: int, frame_count: int) -> Frames:
    """``frame_count`` frames of the test pattern, VP8 or H.264, with one keyframe: the first, where the
    loop starts (also what bench/tools/lk_media.py writes for lk)."""
    import av  # PyAV: heavy import, only needed when the cache is cold

    codec = av.CodecContext.create("libvpx" if video_codec == "vp8" else "libx264", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, fps)
    codec.framerate = Fraction(fps, 1)
    codec.bit_rate = bitrate_bps
    codec.gop_size = 10 * frame_count  # keyframe only where the loop starts
    if video_codec == "vp8":
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0"}
    else:
        # No B-frames (RTP sends in decode order and WebRTC decoders expect none), no scene-cut
        # keyframes, and the parameter sets inside the keyframe rather than in out-of-band extradata.
        keyint = 10 * frame_count
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:repeat-headers=1",
        }
    frames: Frames = []
    for index in range(frame_count):
        frame = av.VideoFrame(width, height, "yuv420p")
        planes = _pattern_planes(width, height, index)
        for plane_index, (plane, data) in enumerate(zip(frame.planes, planes, strict=True)):
            _fill_plane(plane, data, width if plane_index == 0 else width // 2)
        frame.pts = index
        for packet in codec.encode(frame):
            frames.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in codec.encode(None):
        frames.append((bytes(packet), bool(packet.is_keyframe)))
    return frames


def _fill_plane(plane: object, data: bytes, row_bytes: int) -> None:
    """Copies tightly packed rows into a plane whose line size may be padded."""
    line_size: int = plane.line_size  # type: ignore[attr-defined]
    if line_size == row_bytes:
        plane.update(data)  # type: ignore[attr-defined]
        return
    rows = len(data) // row_bytes
    padded = bytearray(line_size * rows)
    for r in range(rows):
        padded[r * line_size : r * line_size + row_bytes] = data[r * row_bytes : (r + 1) * row_bytes]
    plane.update(bytes(padded))  # type: ignore[attr-defined]


def _encode_audio() -> Frames:
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48_000
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = AUDIO_BITRATE_BPS
    codec.time_base = Fraction(1, 48_000)
    samples_per_frame = 960
    frames: Frames = []
    for index in range(AUDIO_LOOP_FRAMES):
        base = index * samples_per_frame
        pcm = bytearray()
        for n in range(samples_per_frame):
            t = (base + n) / 48_000
            envelope = 0.55 + 0.45 * math.sin(2 * math.pi * 0.7 * t)  # syllable-like loudness changes
            value = envelope * (0.5 * math.sin(2 * math.pi * 220 * t) + 0.2 * math.sin(2 * math.pi * 1375 * t))
            pcm += struct.pack("<h", int(value * 12_000))
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples_per_frame)
        frame.sample_rate = 48_000
        frame.pts = base
        frame.planes[0].update(bytes(pcm))
        for packet in codec.encode(frame):
            frames.append((bytes(packet), True))
    for packet in codec.encode(None):
        frames.append((bytes(packet), True))
    if len(frames) < AUDIO_LOOP_FRAMES // 2:
        raise MediaError(f"libopus produced only {len(frames)} frames")
    return frames


def _cache_key(video_codec: str = "vp8") -> str:
    spec = {"format": CLIP_FORMAT, "layers": [vars_of(layer) for layer in LAYERS], "fps": VIDEO_FPS}
    if video_codec != "vp8":  # VP8 caches written before H.264 existed stay valid
        spec["video_codec"] = video_codec
    spec.update(video_frames=VIDEO_LOOP_FRAMES, audio_frames=AUDIO_LOOP_FRAMES, audio_bps=AUDIO_BITRATE_BPS)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def vars_of(layer: VideoLayer) -> dict[str, object]:
    return {"rid": layer.rid, "w": layer.width, "h": layer.height, "bps": layer.bitrate_bps}


def _write(path: Path, tracks: list[Frames]) -> None:
    out = bytearray(b"LKSWCLIP")
    out += struct.pack("<I", len(tracks))
    for frames in tracks:
        out += struct.pack("<I", len(frames))
        for data, keyframe in frames:
            out += struct.pack("<IB", len(data), int(keyframe))
            out += data
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # one per process: generator workers encode at once
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(bytes(out))
    tmp.replace(path)  # atomic: concurrent runs never read half a file


def _read(path: Path) -> list[Frames]:
    data = path.read_bytes()
    if data[:8] != b"LKSWCLIP":
        raise MediaError(f"{path} is not an lkswarm clip file")
    offset = 8
    (track_count,) = struct.unpack_from("<I", data, offset)
    offset += 4
    tracks: list[Frames] = []
    for _ in range(track_count):
        (count,) = struct.unpack_from("<I", data, offset)
        offset += 4
        frames: Frames = []
        for _ in range(count):
            length, keyframe = struct.unpack_from("<IB", data, offset)
            offset += 5
            frames.append((data[offset : offset + length], bool(keyframe)))
            offset += length
        tracks.append(frames)
    return tracks


def load_clips(video_codec: str = "vp8") -> MediaClips:
    """The cached clips, encoding them first if needed."""
    if video_codec not in VIDEO_CODECS:
        raise MediaError(f"unknown video codec {video_codec!r} (one of {', '.join(VIDEO_CODECS)})")
    path = cache_dir() / f"media-{_cache_key(video_codec)}.bin"
    if path.exists():
        try:
            tracks = _read(path)
            return MediaClips(audio=tracks[0], video_layers=tracks[1:], layers=LAYERS, video_codec=video_codec)
        except (MediaError, struct.error, IndexError):
            path.unlink(missing_ok=True)  # corrupt cache: rebuild below
    try:
        audio = _encode_audio()
        video = [_encode_video_layer(layer, video_codec) for layer in LAYERS]
    except ImportError as exc:
        raise MediaError(f"PyAV is needed to encode the synthetic media ({exc}); pip install av") from None
    _write(path, [audio, *video])
    return MediaClips(audio=audio, video_layers=video, layers=LAYERS, video_codec=video_codec)
