"""LiveKit signaling codec: binary and JSON frames of SignalRequest/SignalResponse.

Decoding returns read-only `MessageView` objects over the caller's buffer (no
copy); fields read by their proto names as in protobuf's Python API, and
``to_dict()`` gives the canonical proto3 JSON mapping. Malformed input raises
`CodecError` (a `ValueError`) naming the byte offset and field path.
"""

from __future__ import annotations

from lkswarm._core import (
    MessageView,
    decode_message,
    decode_request,
    decode_request_json,
    decode_response,
    decode_response_json,
    encode_add_track,
    encode_answer,
    encode_leave,
    encode_message,
    encode_offer,
    encode_ping,
    encode_request,
    encode_request_json,
    encode_response,
    encode_response_json,
    encode_subscription,
    encode_trickle,
    encode_update_metadata,
    peek_request,
    peek_response,
    schema_descriptor_set,
)
from lkswarm.errors import CodecError

__all__ = [
    "CodecError",
    "MessageView",
    "decode_message",
    "decode_request",
    "decode_request_json",
    "decode_response",
    "decode_response_json",
    "encode_add_track",
    "encode_answer",
    "encode_leave",
    "encode_message",
    "encode_offer",
    "encode_ping",
    "encode_request",
    "encode_request_json",
    "encode_response",
    "encode_response_json",
    "encode_subscription",
    "encode_trickle",
    "encode_update_metadata",
    "peek_request",
    "peek_response",
    "schema_descriptor_set",
]
