"""bench/tools/lk_media.py: the media it writes in place of lk's Git LFS pointers reads back as real media."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType

import av
import pytest

TOOL = Path(__file__).resolve().parent.parent / "bench" / "tools" / "lk_media.py"


@pytest.fixture(scope="module")
def lk_media() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lk_media", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ogg_opus_has_one_packet_per_page_and_decodes(lk_media: ModuleType, tmp_path: Path) -> None:
    from lkswarm.media.clips import _encode_audio

    packets = [frame for frame, _ in _encode_audio()]
    data = lk_media.ogg_opus(packets)
    pages = data.split(b"OggS")[1:]
    # OpusHead, OpusTags, then one page per 20 ms packet: lk's looper sends a page as one sample.
    assert len(pages) == 2 + len(packets)
    # After the capture pattern: 22 header bytes, the segment count, one lacing value, then the packet.
    assert pages[0][24:32] == b"OpusHead" and pages[1][24:32] == b"OpusTags"
    assert struct.unpack_from("<q", pages[3], 2)[0] == 2 * 960  # granule: samples so far
    path = tmp_path / "a.ogg"
    path.write_bytes(data)
    with av.open(str(path)) as container:  # libavformat checks every page's CRC
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples == len(packets) * 960 - 312  # less the pre-skip


def test_ivf_and_annex_b_decode_at_the_layer_size(lk_media: ModuleType, tmp_path: Path) -> None:
    frames = lk_media.encode_video("vp8", 320, 180, 15, 150_000)
    assert len(frames) == 15 * lk_media.LOOP_S
    path = tmp_path / "v.ivf"
    path.write_bytes(lk_media.ivf(frames, 320, 180, 15))
    with av.open(str(path)) as container:
        decoded = [(f.width, f.height) for f in container.decode(video=0)]
    assert decoded == [(320, 180)] * len(frames)
    h264 = tmp_path / "v.h264"
    h264.write_bytes(b"".join(lk_media.encode_video("h264", 180, 240, 15, 200_000)))
    with av.open(str(h264)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 15 * lk_media.LOOP_S


def test_resources_are_rewritten_from_their_names(lk_media: ModuleType, tmp_path: Path) -> None:
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n"
    (tmp_path / "tunnel_180_150.ivf").write_bytes(pointer)
    (tmp_path / "tunnel_360_600.ivf").write_bytes(pointer)
    (tmp_path / "circles_p180_200.h264").write_bytes(pointer)
    (tmp_path / "README.md").write_text("not a pointer")
    written = {row["file"]: row for row in lk_media.replace_resources(tmp_path)}
    assert set(written) == {"tunnel_180_150.ivf", "tunnel_360_600.ivf", "circles_p180_200.h264"}
    assert (written["tunnel_180_150.ivf"]["size"], written["tunnel_180_150.ivf"]["fps"]) == ("320x180", 15)
    assert (written["tunnel_360_600.ivf"]["size"], written["tunnel_360_600.ivf"]["fps"]) == ("640x360", 20)
    assert written["circles_p180_200.h264"]["size"] == "180x240"  # portrait: width given, height 4/3 of it
    assert not lk_media.is_lfs_pointer(tmp_path / "tunnel_360_600.ivf")
    assert (tmp_path / "README.md").read_text() == "not a pointer"
    (tmp_path / "mystery_1_2.webm").write_bytes(pointer)
    with pytest.raises(RuntimeError, match="no rule"):
        lk_media.replace_resources(tmp_path)
