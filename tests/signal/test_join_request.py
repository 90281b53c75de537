"""The ``/rtc/v1`` join request, checked against livekit-protocol's own classes (the schema oracle)."""

from __future__ import annotations

import base64
import gzip
import urllib.parse

import pytest
from livekit.protocol import models, rtc

from lkswarm.signal.enums import CLIENT_PROTOCOL
from lkswarm.signal.join_request import (
    JoinMedia,
    join_request_mapping,
    rtc_v1_path,
    validate_v1_path,
    wrap_join_request,
)
from lkswarm.signal.requests import add_audio_track

OFFER_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def unwrap(value: str) -> tuple[rtc.WrappedJoinRequest, rtc.JoinRequest]:
    wrapped = rtc.WrappedJoinRequest()
    wrapped.ParseFromString(base64.urlsafe_b64decode(value))  # Go's URLEncoding: padded, so this must not need help
    raw = gzip.decompress(wrapped.join_request) if wrapped.compression == wrapped.GZIP else wrapped.join_request
    request = rtc.JoinRequest()
    request.ParseFromString(raw)
    return wrapped, request


@pytest.mark.parametrize(("compression", "expected"), [("gzip", 1), ("none", 0)])
def test_a_join_with_media_decodes_with_the_official_schema(compression: str, expected: int) -> None:
    media = JoinMedia([add_audio_track("p0-mic", "synthetic-audio")["addTrack"]], OFFER_SDP, 1)
    value = wrap_join_request(join_request_mapping(auto_subscribe=True, media=media), compression)  # type: ignore[arg-type]
    assert len(value) % 4 == 0, "base64url with its padding, as Go's base64.URLEncoding decodes it"
    assert "+" not in value and "/" not in value
    wrapped, request = unwrap(value)
    assert wrapped.compression == expected
    assert request.client_info.sdk == models.ClientInfo.PYTHON
    assert request.client_info.protocol == CLIENT_PROTOCOL
    # auto_subscribe defaults to off on /rtc/v1, so it must be written; allow_pause stays unset (false on v1.13.5)
    assert request.connection_settings.auto_subscribe is True
    assert not request.connection_settings.HasField("subscriber_allow_pause")
    [track] = request.add_track_requests
    assert (track.cid, track.type, track.disable_red) == ("p0-mic", 0, True)
    assert (request.publisher_offer.type, request.publisher_offer.sdp, request.publisher_offer.id) == (
        "offer",
        OFFER_SDP,
        1,
    )
    assert not request.reconnect


def test_gzip_is_deterministic_and_smaller_for_an_sdp_sized_offer() -> None:
    media = JoinMedia([], OFFER_SDP * 100, 1)
    mapping = join_request_mapping(auto_subscribe=True, media=media)
    assert wrap_join_request(mapping, "gzip") == wrap_join_request(mapping, "gzip")  # mtime=0
    assert len(wrap_join_request(mapping, "gzip")) < len(wrap_join_request(mapping, "none")) / 4


def test_a_resume_carries_the_sid_and_no_offer() -> None:
    media = JoinMedia([], OFFER_SDP, 1)
    mapping = join_request_mapping(auto_subscribe=False, media=media, resume_sid="PA_abc")
    _, request = unwrap(wrap_join_request(mapping, "none"))
    assert request.reconnect and request.participant_sid == "PA_abc"
    assert request.reconnect_reason == models.RR_SIGNAL_DISCONNECTED
    assert not request.HasField("publisher_offer") and not request.add_track_requests
    assert request.HasField("connection_settings") and request.connection_settings.auto_subscribe is False


def test_the_request_targets_escape_the_padding_and_keep_the_token() -> None:
    value = wrap_join_request(join_request_mapping(auto_subscribe=True), "gzip")
    for target, path in ((rtc_v1_path("tok", value), "/rtc/v1"), (validate_v1_path("tok", value), "/rtc/v1/validate")):
        parsed = urllib.parse.urlsplit(target)
        assert parsed.path == path
        query = urllib.parse.parse_qs(parsed.query)
        assert query == {"access_token": ["tok"], "join_request": [value]}


def test_an_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="gzip, none"):
        wrap_join_request(join_request_mapping(auto_subscribe=True), "zlib")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "token",
    ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_", "a token with spaces+plus/slash&amp=", "ünïcode", ""],
)
def test_the_request_targets_are_exactly_what_urlencode_writes(token: str) -> None:
    # The fast path (a JWT, a base64url value) and the general one both match urlencode byte for byte.
    value = wrap_join_request(join_request_mapping(auto_subscribe=True), "gzip")
    for join_request in (value, value + "==", "x y/z"):
        expected = urllib.parse.urlencode({"access_token": token, "join_request": join_request})
        assert rtc_v1_path(token, join_request) == "/rtc/v1?" + expected
        assert validate_v1_path(token, join_request) == "/rtc/v1/validate?" + expected
