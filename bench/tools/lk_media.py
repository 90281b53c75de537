"""Builds `lk` v2.18.2 with real media in place of the Git LFS pointers its module zip carries.

lk embeds its sample media (`pkg/provider/resources`: VP8 in IVF, H.264 Annex B, Opus in Ogg) with
`go:embed`, but the Go module zip holds each of those files as a 130-byte Git LFS pointer, and the LFS
objects are not reachable from here. Built from the zip, lk publishes the pointer text: about 4.6 audio
"packets" a second instead of 50, and no video at all. That made the vs-lk comparison meaningless.

This tool copies lk's module source, writes a file of the same name, codec, container, resolution,
frame rate and bitrate in place of every pointer (our test pattern and tone, encoded with PyAV, not
LiveKit's clips), and builds lk from that copy. Nothing else in lk changes, so it loops, paces and
packetizes real frames exactly as it would its own. The frame rate of each layer is lk's (15, 20 and
30 fps, lowest first: `createSpecs` in `embeds.go`); name and bitrate come from the file name.

Usage: ``python bench/tools/lk_media.py [--out .venv/bin/lk] [--if-placeholder]`` (``make bench`` runs
it with ``--if-placeholder`` after building lk; the result is cached under ``~/.cache/lkswarm/gobin``).
It needs Go, Debian's
portaudio19-dev (lk's `portaudio_system` build tag) and the local module proxy that
`bench/tools/provide-go-module` fills for the `github.com/livekit/protocol` version lk pins.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from lkswarm.media.clips import _encode_audio, encode_pattern  # noqa: E402

LK_MODULE = "github.com/livekit/livekit-cli/v2"
LK_VERSION = "v2.18.2"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
LAYER_FPS = (15, 20, 30)  # lk's createSpecs/circlesSpec, lowest layer first
LOOP_S = 4
# Built once per machine, like the tools .ci/install-go-tool caches.
CACHED = Path.home() / ".cache" / "lkswarm" / "gobin" / f"lk-{LK_VERSION}-media" / "lk"
VIDEO_NAME = re.compile(r"^(?P<prefix>[a-z]+)_(?P<portrait>p?)(?P<size>\d+)_(?P<kbps>\d+)\.(?P<ext>ivf|h264)$")


def is_lfs_pointer(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(LFS_POINTER)) == LFS_POINTER


# -- containers ---------------------------------------------------------------------------------


def ivf(frames: list[bytes], width: int, height: int, fps: int) -> bytes:
    """VP8 frames in an IVF file (32-byte header; 12-byte header per frame), timebase 1/fps."""
    out = bytearray(b"DKIF" + struct.pack("<HH4sHHIIII", 0, 32, b"VP80", width, height, fps, 1, len(frames), 0))
    for index, frame in enumerate(frames):
        out += struct.pack("<IQ", len(frame), index) + frame
    return bytes(out)


def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def ogg_page(payload: bytes, granule: int, sequence: int, flags: int, serial: int = 0x6C6B7377) -> bytes:
    """One Ogg page holding one packet (RFC 3533), with its CRC."""
    lacing = [255] * (len(payload) // 255) + [len(payload) % 255]
    header = b"OggS" + struct.pack("<BBqIII", 0, flags, granule, serial, sequence, 0)
    page = bytearray(header + bytes([len(lacing)]) + bytes(lacing) + payload)
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    page[22:26] = struct.pack("<I", crc)
    return bytes(page)


def ogg_opus(packets: list[bytes], samples_per_packet: int = 960) -> bytes:
    """Mono 48 kHz Opus (RFC 7845): OpusHead, OpusTags, then one packet per page, as lk's looper
    sends one page per 20 ms sample."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48_000, 0, 0)
    vendor = b"lkswarm"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [ogg_page(head, 0, 0, 0x02), ogg_page(tags, 0, 1, 0)]
    for index, packet in enumerate(packets):
        last = index == len(packets) - 1
        pages.append(ogg_page(packet, (index + 1) * samples_per_packet, index + 2, 0x04 if last else 0))
    return b"".join(pages)


# -- encoding -----------------------------------------------------------------------------------


def encode_video(video_codec: str, width: int, height: int, fps: int, bitrate_bps: int) -> list[bytes]:
    """LOOP_S seconds of lkswarm's test pattern (``vp8`` or ``h264``), one keyframe (the first frame)."""
    count = fps * LOOP_S
    frames = [data for data, _ in encode_pattern(video_codec, width, height, fps, bitrate_bps, count)]
    if len(frames) != count:
        raise RuntimeError(f"{video_codec} gave {len(frames)} frames for {width}x{height}, wanted {count}")
    return frames


def replace_resources(resources: Path) -> list[dict[str, object]]:
    """Writes real media over every LFS pointer in lk's resources directory; returns what it wrote."""
    pointers = sorted(p for p in resources.iterdir() if p.is_file() and is_lfs_pointer(p))
    written: list[dict[str, object]] = []
    layers: dict[str, list[tuple[int, Path, re.Match[str]]]] = {}
    for path in pointers:
        if path.suffix == ".ogg":
            packets = [frame for frame, _ in _encode_audio()]
            path.write_bytes(ogg_opus(packets))
            written.append({"file": path.name, "codec": "opus", "packets": len(packets)})
            continue
        match = VIDEO_NAME.match(path.name)
        if match is None:
            raise RuntimeError(f"no rule for lk resource {path.name}")
        layers.setdefault(match["prefix"], []).append((int(match["size"]), path, match))
    for prefix, entries in layers.items():
        if len(entries) > len(LAYER_FPS):  # a layer without a known frame rate would stay a pointer
            raise RuntimeError(f"lk resource set {prefix!r} has {len(entries)} layers; lk's specs have 3")
        for fps, (size, path, match) in zip(LAYER_FPS, sorted(entries, key=lambda entry: entry[0]), strict=False):
            if match["portrait"]:  # circlesSpec: width given, height = width * 4 / 3
                width, height = size, size * 4 // 3
            else:  # createSpecs: height given, 16:9
                width, height = size * 16 // 9, size
            kbps = int(match["kbps"])
            video_codec = "vp8" if match["ext"] == "ivf" else "h264"
            frames = encode_video(video_codec, width, height, fps, kbps * 1000)
            data = ivf(frames, width, height, fps) if match["ext"] == "ivf" else b"".join(frames)
            path.write_bytes(data)
            kbps_out = round(sum(map(len, frames)) * 8 / LOOP_S / 1000)
            written.append({"file": path.name, "set": prefix, "size": f"{width}x{height}", "fps": fps,
                            "kbps_target": kbps, "kbps_encoded": kbps_out})  # fmt: skip
    return written


# -- building -----------------------------------------------------------------------------------


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    local_proxy = Path.home() / ".cache" / "lkswarm" / "goproxy"
    if local_proxy.is_dir():
        upstream = subprocess.run(["go", "env", "GOPROXY"], check=True, capture_output=True, text=True).stdout.strip()
        env["GOPROXY"] = f"file://{local_proxy},{upstream}"
    return env


def build(out: Path) -> list[dict[str, object]]:
    env = go_env()
    info = subprocess.run(
        ["go", "mod", "download", "-json", f"{LK_MODULE}@{LK_VERSION}"],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    source = Path(json.loads(info.stdout)["Dir"])
    with tempfile.TemporaryDirectory(prefix="lk-media-") as tmp:
        tree = Path(tmp) / "lk"
        shutil.copytree(source, tree)
        for path in tree.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
        written = replace_resources(tree / "pkg" / "provider" / "resources")
        binary = Path(tmp) / "lk-bin"
        subprocess.run(
            ["go", "build", "-tags", "portaudio_system", "-trimpath", "-o", str(binary), "./cmd/lk"],
            check=True, cwd=tree, env=env,
        )  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(binary, out)
    return written


def has_placeholder_media(binary: Path) -> bool:
    return LFS_POINTER in binary.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".venv" / "bin" / "lk")
    parser.add_argument(
        "--if-placeholder", action="store_true",
        help="only when --out embeds LFS pointers; reuse the cached build with real media when there is one",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = parser.parse_args()
    if args.if_placeholder:
        if not args.out.is_file() or not has_placeholder_media(args.out):
            return
        if CACHED.is_file():
            shutil.copy2(CACHED, args.out)
            return
    summary = {"lk": str(args.out), "version": LK_VERSION, "resources": build(CACHED)}
    CACHED.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    shutil.copy2(CACHED, args.out)
    if not args.quiet:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
