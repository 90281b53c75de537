"""Enum values of the LiveKit signaling protocol that the engine acts on (from protos/)."""

from __future__ import annotations

from enum import IntEnum

# The highest client protocol whose behaviour we implement: 13 = LeaveRequest.action,
# 15 = request_response for OK results, 16 = room_moved. 17 (packet trailer) is not implemented.
CLIENT_PROTOCOL = 16


class _Reason(IntEnum):
    """A reason enum whose values a newer server may extend: `name_of` names an unknown one too."""

    @classmethod
    def name_of(cls, value: int) -> str:
        try:
            return cls(value).name
        except ValueError:
            return f"REASON_{value}"


class DisconnectReason(_Reason):
    UNKNOWN_REASON = 0
    CLIENT_INITIATED = 1
    DUPLICATE_IDENTITY = 2
    SERVER_SHUTDOWN = 3
    PARTICIPANT_REMOVED = 4
    ROOM_DELETED = 5
    STATE_MISMATCH = 6
    JOIN_FAILURE = 7
    MIGRATION = 8
    SIGNAL_CLOSE = 9
    ROOM_CLOSED = 10
    USER_UNAVAILABLE = 11
    USER_REJECTED = 12
    SIP_TRUNK_FAILURE = 13
    CONNECTION_TIMEOUT = 14
    MEDIA_FAILURE = 15
    AGENT_ERROR = 16


class RequestResponseReason(_Reason):
    """RequestResponse.Reason: why the server refused a request (data tracks: publish/unpublish)."""

    OK = 0
    NOT_FOUND = 1
    NOT_ALLOWED = 2
    LIMIT_EXCEEDED = 3
    QUEUED = 4
    UNSUPPORTED_TYPE = 5
    UNCLASSIFIED_ERROR = 6
    INVALID_HANDLE = 7
    INVALID_NAME = 8
    DUPLICATE_HANDLE = 9
    DUPLICATE_NAME = 10
    INVALID_REQUEST = 11


class SubscriptionError(_Reason):
    """SubscriptionResponse.err: why the server could not subscribe a participant to a track."""

    SE_UNKNOWN = 0
    SE_CODEC_UNSUPPORTED = 1
    SE_TRACK_NOTFOUND = 2


class LeaveAction(IntEnum):
    DISCONNECT = 0
    RESUME = 1
    RECONNECT = 2


class SignalTarget(IntEnum):
    PUBLISHER = 0
    SUBSCRIBER = 1


class ParticipantState(IntEnum):
    JOINING = 0
    JOINED = 1
    ACTIVE = 2
    DISCONNECTED = 3


class TrackType(IntEnum):
    AUDIO = 0
    VIDEO = 1
    DATA = 2


class TrackSource(IntEnum):
    UNKNOWN = 0
    CAMERA = 1
    MICROPHONE = 2
    SCREEN_SHARE = 3
    SCREEN_SHARE_AUDIO = 4


class ConnectionQuality(IntEnum):
    """The server's estimate of a connection (livekit.ConnectionQuality); the values are not in order of worth."""

    POOR = 0
    GOOD = 1
    EXCELLENT = 2
    LOST = 3


# From best to worst, as livekit-server ranks them (livekit/protocol utils/connectionquality.go).
QUALITY_BEST_FIRST = (
    ConnectionQuality.EXCELLENT,
    ConnectionQuality.GOOD,
    ConnectionQuality.POOR,
    ConnectionQuality.LOST,
)


class ReconnectReason(IntEnum):
    RR_UNKNOWN = 0
    RR_SIGNAL_DISCONNECTED = 1
    RR_PUBLISHER_FAILED = 2
    RR_SUBSCRIBER_FAILED = 3
    RR_SWITCH_CANDIDATE = 4
