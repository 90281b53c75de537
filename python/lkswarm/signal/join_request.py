"""The ``/rtc/v1`` join: a `JoinRequest` wrapped, compressed and base64url-encoded into one query parameter.

Theory of operation
-------------------
Today's SDKs (the JS SDK's ``singlePeerConnection``, the default) join through
``GET /rtc/v1?join_request=…``. The value is a ``WrappedJoinRequest`` whose
``join_request`` bytes are a ``JoinRequest``, gzip-compressed (RFC 1952; the
server refuses zlib) or not, then base64 in the URL alphabet *with* its padding,
since livekit-server decodes it with Go's ``base64.URLEncoding`` (v1.13.5,
pkg/service/rtcservice.go:164-199).

What the server reads from a JoinRequest that the ``/rtc`` query carried before:
the client info, ``connection_settings.auto_subscribe`` (which defaults to *off*
on this path, so it is always written), the tracks to publish
(``add_track_requests``, applied right after the join) and the publisher's offer,
and for a resume ``reconnect`` with the participant sid (a resume's offer is not
read: the media follows on the signal connection). ``subscriber_allow_pause`` is
left unset, which v1.13.5 reads as false, as ``/rtc`` does under the default
configuration.

`rtc_path` builds the older ``/rtc`` target, whose query parameters carry the
same join (or a resume) for the path with two PeerConnections.

Everything here is pure: mappings in, strings out. The codec encodes the messages
from our own schema (``protos/livekit/join.proto``).
"""

from __future__ import annotations

import base64
import gzip
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lkswarm import __version__
from lkswarm.signal import codec
from lkswarm.signal.enums import CLIENT_PROTOCOL, ReconnectReason

Compression = Literal["gzip", "none"]
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "none")


@dataclass(frozen=True, slots=True)
class JoinMedia:
    """What a participant's media half puts in its join: the tracks it publishes and its one offer."""

    add_track_requests: Sequence[dict[str, Any]]  # AddTrackRequest mappings (no ``addTrack`` wrapper)
    offer_sdp: str
    offer_id: int


def join_request_mapping(
    *,
    auto_subscribe: bool,
    protocol: int = CLIENT_PROTOCOL,
    media: JoinMedia | None = None,
    resume_sid: str | None = None,
) -> dict[str, Any]:
    """The `JoinRequest` as the codec's JSON-shaped mapping: a join (with its media, if any) or a resume."""
    request: dict[str, Any] = {
        "clientInfo": {"sdk": "PYTHON", "version": __version__, "protocol": protocol},
        "connectionSettings": {"autoSubscribe": auto_subscribe, "adaptiveStream": False},
    }
    if resume_sid is not None:
        request.update(
            reconnect=True,
            participantSid=resume_sid,
            reconnectReason=ReconnectReason.RR_SIGNAL_DISCONNECTED.name,
        )
    elif media is not None:
        request["addTrackRequests"] = list(media.add_track_requests)
        request["publisherOffer"] = {"type": "offer", "sdp": media.offer_sdp, "id": media.offer_id}
    return request


def wrap_join_request(mapping: dict[str, Any], compression: Compression = "gzip") -> str:
    """The ``join_request`` query value: base64url (padded) of the ``WrappedJoinRequest`` around ``mapping``."""
    raw = codec.encode_message("livekit.JoinRequest", mapping)
    if compression == "gzip":
        # mtime=0: the same request always gives the same bytes (golden tests, reproducible URLs).
        payload, kind = gzip.compress(raw, mtime=0), "GZIP"
    elif compression == "none":
        payload, kind = raw, "NONE"
    else:
        raise ValueError(f"join request compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    wrapped = codec.encode_message(
        "livekit.WrappedJoinRequest",
        {"compression": kind, "joinRequest": base64.b64encode(payload).decode("ascii")},
    )
    return base64.urlsafe_b64encode(wrapped).decode("ascii")


# What ``quote_plus`` leaves as it is, plus the base64 padding ``=``: a JWT and a base64url value.
_UNRESERVED_OR_PADDING = re.compile(r"[A-Za-z0-9_.~=-]*")


def _form_value(value: str) -> str:
    """``urlencode``'s escaping of one value (``quote_plus``). A token or a base64url join request needs
    only its padding escaped, done here in one pass in C: ``quote_plus`` builds a list of the value's
    characters, about 80 µs for a join request that carries an SDP offer."""
    if _UNRESERVED_OR_PADDING.fullmatch(value):
        return value.replace("=", "%3D")
    return urllib.parse.quote_plus(value, safe="")


def rtc_path(
    token: str, *, auto_subscribe: bool = True, protocol: int = CLIENT_PROTOCOL, resume_sid: str | None = None
) -> str:
    """The ``/rtc`` request target: query-parameter join (or resume, with ``reconnect=1&sid=``)."""
    query = {
        "access_token": token,
        "auto_subscribe": "1" if auto_subscribe else "0",
        "sdk": "python",
        "version": __version__,
        "protocol": str(protocol),
        "adaptive_stream": "0",
    }
    if resume_sid is not None:
        query.update(reconnect="1", sid=resume_sid, reconnect_reason=str(int(ReconnectReason.RR_SIGNAL_DISCONNECTED)))
    return "/rtc?" + urllib.parse.urlencode(query)


def rtc_v1_path(token: str, join_request: str) -> str:
    """The ``/rtc/v1`` request target, as ``urlencode`` writes it: the padding ``=`` escaped; the
    server's form decoding undoes it."""
    return f"/rtc/v1?access_token={_form_value(token)}&join_request={_form_value(join_request)}"


def validate_v1_path(token: str, join_request: str) -> str:
    """The ``/rtc/v1/validate`` target: the server checks the token and the request and creates no participant."""
    return f"/rtc/v1/validate?access_token={_form_value(token)}&join_request={_form_value(join_request)}"


__all__ = [
    "COMPRESSIONS",
    "Compression",
    "JoinMedia",
    "join_request_mapping",
    "rtc_v1_path",
    "validate_v1_path",
    "wrap_join_request",
]
