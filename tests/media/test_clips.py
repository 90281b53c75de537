"""The synthetic publishers' clips: real codec output a decoder can start from frame 0 of every loop."""

from __future__ import annotations

import pytest

from lkswarm import _core
from lkswarm.errors import MediaError
from lkswarm.media import clips


def nal_types(access_unit: bytes) -> list[int]:
    """NAL unit types of an Annex B access unit, in order."""
    return [access_unit[i + 3] & 0x1F for i in range(len(access_unit) - 3) if access_unit[i : i + 3] == b"\x00\x00\x01"]


def test_h264_layer_is_constrained_baseline_with_its_parameter_sets_in_the_only_keyframe() -> None:
    frames = clips._encode_video_layer(clips.LAYERS[0], "h264")
    assert len(frames) == clips.VIDEO_LOOP_FRAMES
    assert [keyframe for _, keyframe in frames] == [True] + [False] * (clips.VIDEO_LOOP_FRAMES - 1)
    first = nal_types(frames[0][0])
    # SPS and PPS before the IDR slices: rewinding to frame 0 (a keyframe request) refreshes a decoder.
    assert first[:2] == [7, 8] and 5 in first, first
    sps = frames[0][0][frames[0][0].index(b"\x00\x00\x01\x67") + 4 :]
    profile_idc, constraints = sps[0], sps[1]
    assert profile_idc == 66 and constraints & 0x40, (profile_idc, constraints)  # baseline, constraint_set1
    # No B-frames and no IDR after the first: every later frame is non-IDR slices only.
    assert all(set(nal_types(data)) == {1} for data, _ in frames[1:])
    kbps = sum(len(data) for data, _ in frames) * 8 / (clips.VIDEO_LOOP_FRAMES / clips.VIDEO_FPS) / 1000
    assert 0.5 * 150 < kbps < 2 * 150, kbps


def test_each_codec_has_its_own_cache_and_vp8_keeps_its_old_one() -> None:
    assert clips._cache_key("vp8") == clips._cache_key()
    assert clips._cache_key("h264") != clips._cache_key("vp8")
    with pytest.raises(MediaError, match="unknown video codec 'av1'"):
        clips.load_clips("av1")


@pytest.mark.integration
def test_the_hub_refuses_a_codec_it_cannot_send() -> None:
    hub = _core.MediaHub("127.0.0.1")
    try:
        with pytest.raises(MediaError, match="unknown video codec"):
            hub.set_library(None, [], video_codec="av1")
    finally:
        hub.close()
