"""Events a `SignalSession` reports to its driver (past-tense, immutable)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Joined:
    """The JoinResponse arrived (or, after a resume, the ReconnectResponse)."""

    participant_sid: str
    room_name: str
    room_sid: str
    other_participants: int
    server_version: str
    subscriber_primary: bool
    ping_interval_s: float
    ping_timeout_s: float
    resumed: bool = False
    # After a resume: the last reliable data sequence the server has from us (ReconnectResponse.last_message_seq).
    last_message_seq: int = 0


@dataclass(frozen=True, slots=True)
class ParticipantsChanged:
    """The room's participant set as this participant sees it changed."""

    count: int


@dataclass(frozen=True, slots=True)
class OfferReceived:
    sdp: str
    id: int


@dataclass(frozen=True, slots=True)
class AnswerReceived:
    """The server's answer to our offer; on the single-PC path ``mid_to_track_id`` names the track
    each receive section carries (the server's map, which beats the SDP's ``a=msid``)."""

    sdp: str
    id: int
    mid_to_track_id: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MediaSectionsRequired:
    """Single-PC: the server needs more receive sections (``0, 0``: a plain re-offer) to add tracks."""

    num_audios: int
    num_videos: int


@dataclass(frozen=True, slots=True)
class TrickleReceived:
    candidate_init: str
    target: int
    final: bool


@dataclass(frozen=True, slots=True)
class TrackPublished:
    cid: str
    track_sid: str


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    track_sid: str


@dataclass(frozen=True, slots=True)
class TrackMuteRequested:
    """The server muted (or unmuted) one of our published tracks: an admin's MutePublishedTrack."""

    track_sid: str
    muted: bool


@dataclass(frozen=True, slots=True)
class TrackSubscribed:
    track_sid: str


@dataclass(frozen=True, slots=True)
class RemoteTrackPublished:
    """Another participant's track appeared in a ParticipantUpdate."""

    participant_sid: str
    participant_identity: str
    track_sid: str
    track_type: int
    at: float  # session clock when the update arrived


@dataclass(frozen=True, slots=True)
class PongReceived:
    rtt_ms: float


@dataclass(frozen=True, slots=True)
class QualityReported:
    """The server's estimate of our own connection (the ConnectionQualityInfo about us in a ``connection_quality``).

    ``quality`` is a `ConnectionQuality` value; ``score`` its MOS, 1.0 to 4.5."""

    quality: int
    score: float


@dataclass(frozen=True, slots=True)
class LeaveRequested:
    """The server asked us to leave; ``action`` is a `LeaveAction`."""

    reason: int
    action: int
    can_reconnect: bool


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    token: str


@dataclass(frozen=True, slots=True)
class RoomMoved:
    room_name: str
    token: str


@dataclass(frozen=True, slots=True)
class SubscriptionFailed:
    """The server could not subscribe us to ``track_sid`` (a `SubscriptionError`: a codec our answer left
    out, a track gone): that track's load never reaches this participant."""

    track_sid: str
    error: int


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request_response with a non-OK reason."""

    request_id: int
    reason: int
    message: str
    request: str = ""  # the request it answers, when the server echoes it (e.g. "publish_data_track")


@dataclass(frozen=True, slots=True)
class DataTrackPublished:
    """The server took our ``publish_data_track_request`` (its DataTrackInfo)."""

    pub_handle: int
    track_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class DataTrackUnpublished:
    """The server confirmed an ``unpublish_data_track_request``."""

    pub_handle: int
    track_sid: str


@dataclass(frozen=True, slots=True)
class RemoteDataTrackPublished:
    """Another participant's data track appeared in a participant update (``ParticipantInfo.data_tracks``)."""

    participant_sid: str
    participant_identity: str
    track_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class DataTrackHandles:
    """The server's full map of our subscriber handles: (sub_handle, publisher identity, publisher sid, track sid)."""

    handles: tuple[tuple[int, str, str, str], ...]


@dataclass(frozen=True, slots=True)
class Failed:
    """The session cannot go on; ``reason`` is the short code the report counts."""

    reason: str
    detail: str = ""


SessionEvent = (
    Joined
    | ParticipantsChanged
    | OfferReceived
    | AnswerReceived
    | MediaSectionsRequired
    | TrickleReceived
    | TrackPublished
    | TrackUnpublished
    | TrackMuteRequested
    | TrackSubscribed
    | RemoteTrackPublished
    | PongReceived
    | QualityReported
    | LeaveRequested
    | TokenRefreshed
    | RoomMoved
    | RequestFailed
    | SubscriptionFailed
    | DataTrackPublished
    | DataTrackUnpublished
    | RemoteDataTrackPublished
    | DataTrackHandles
    | Failed
)
