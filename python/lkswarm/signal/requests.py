"""The track requests both media tiers send: ``addTrack`` (publishing), ``trackSetting`` (a subscriber's layout),
and the data-track requests (publish, unpublish, subscribe).

Each returns the request as the codec's JSON-shaped mapping, ready for `SignalSession.send_request`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from lkswarm.signal.enums import TrackSource, TrackType


class VideoLayer(NamedTuple):
    """One simulcast layer as a publisher announces it."""

    quality: int | str  # VideoQuality: 0/"LOW", 1/"MEDIUM", 2/"HIGH"
    width: int
    height: int
    bitrate_bps: int


def add_audio_track(cid: str, name: str) -> dict[str, Any]:
    """A microphone track, RED off (the synthetic and probe audio carry one Opus frame per packet)."""
    return {
        "addTrack": {
            "cid": cid,
            "name": name,
            "type": TrackType.AUDIO.name,
            "source": TrackSource.MICROPHONE.name,
            "disableRed": True,
        }
    }


def add_video_track(cid: str, name: str, codec: str, layers: Sequence[VideoLayer]) -> dict[str, Any]:
    """A camera track with its simulcast layers (lowest first); its size is the top layer's."""
    layer_list = [
        {"quality": layer.quality, "width": layer.width, "height": layer.height, "bitrate": layer.bitrate_bps}
        for layer in layers
    ]
    top = layers[-1]
    return {
        "addTrack": {
            "cid": cid,
            "name": name,
            "type": TrackType.VIDEO.name,
            "source": TrackSource.CAMERA.name,
            "width": top.width,
            "height": top.height,
            "layers": layer_list,
            "simulcastCodecs": [{"codec": codec, "cid": cid, "layers": layer_list}],
        }
    }


def track_setting(
    track_sid: str, *, quality: str | None = None, width: int = 0, height: int = 0, disabled: bool = False
) -> dict[str, Any]:
    """What a subscriber asks of one remote track: a layer and size, or nothing at all (``disabled``)."""
    setting: dict[str, Any] = {"trackSids": [track_sid]}
    if disabled:
        setting["disabled"] = True
    elif quality is not None:
        setting["quality"] = quality
        if width or height:
            setting.update(width=width, height=height)
    return {"trackSetting": setting}


def publish_data_track(pub_handle: int, name: str) -> dict[str, Any]:
    """``publish_data_track_request``: our handle (1..65535, ours to choose) and a name unique per participant."""
    return {"publishDataTrackRequest": {"pubHandle": pub_handle, "name": name}}


def unpublish_data_track(pub_handle: int) -> dict[str, Any]:
    return {"unpublishDataTrackRequest": {"pubHandle": pub_handle}}


def update_data_subscription(track_sids: Sequence[str], subscribe: bool = True) -> dict[str, Any]:
    """Subscribes to (or leaves) remote data tracks explicitly, as the SDKs do (auto-subscribe is opt-in)."""
    return {"updateDataSubscription": {"updates": [{"trackSid": sid, "subscribe": subscribe} for sid in track_sids]}}
