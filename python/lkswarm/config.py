"""The resolved scenario of one run (validated by pydantic; the report echoes it)."""

from __future__ import annotations

import re
import ssl
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lkswarm.errors import ConfigError
from lkswarm.impairment import parse_impairment
from lkswarm.signal.enums import CLIENT_PROTOCOL
from lkswarm.signal.paths import DEFAULT_SIGNAL_PATH, SignalPath, parse_signal_path
from lkswarm.signal.websocket import DEFAULT_MAX_FRAME_BYTES, MAX_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration_s(text: str | float) -> float:
    """``30``, ``30s``, ``2m``, ``1.5h``, ``500ms`` → seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"invalid duration {text!r} (use e.g. 30, 30s, 2m)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class Stage(BaseModel):
    """One k6-style stage: move the live population linearly to ``target`` over ``duration_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(gt=0, description="stage length (seconds, or 30s / 2m in files)")
    target: int = Field(ge=0, le=1_000_000, description="live participants (all rooms) at the end of the stage")

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return _duration_field(value)


def _duration_field(value: object) -> float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration_s(value)
    raise ValueError("duration must be a number of seconds or a string like 30s")


def _check_ca_file(path: str) -> None:
    """Loads ``path`` into a throwaway context, so that a bad bundle is a usage error before the run
    rather than every participant failing its TLS handshake."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:  # before OSError, its base: the file was read but holds no usable PEM
        raise ValueError(f"{path}: not a PEM CA bundle ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None


MIN_DATA_PAYLOAD_BYTES = 20  # our stamp: magic, send time, counter (lkswarm.media.data)
MAX_DATA_TRACK_FRAME_BYTES = 15_000  # one packet per frame; the JS SDK packetizes at a 16,000 B MTU
MAX_DATA_PAYLOAD_BYTES = 64_000  # livekit-server reads a data channel message into 65,535 bytes; the SDKs cap at 64,000
LAYOUT = re.compile(r"^(speaker|grid:[1-9][0-9]?)$")


class RunConfig(BaseModel):
    """Everything a run needs; the CLI and scenario files fill it in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, description="Server URL; None starts an embedded local server")
    server_metrics: str | None = Field(
        default=None, description="the server's Prometheus /metrics URL (the embedded server's is known)"
    )
    rooms: int = Field(default=1, ge=1, le=100_000)
    participants: int = Field(default=10, ge=1, le=1_000_000, description="participants per room")
    rate: float = Field(default=20.0, gt=0, description="joins started per second")
    arrival: Literal["constant", "poisson"] = "constant"
    duration_s: float = Field(default=10.0, gt=0)
    signal_only: bool = Field(default=False, description="signaling only: no PeerConnections (evicted after 60 s)")
    audio_publishers: int = Field(default=0, ge=0, description="audio publishers per room")
    video_publishers: int = Field(default=0, ge=0, description="video publishers per room")
    data_publishers: int = Field(default=0, ge=0, description="data-message publishers per room (the first seats)")
    data_rate: float = Field(default=1.0, gt=0, le=1000, description="data messages per second per data publisher")
    data_size: int = Field(
        default=200,
        ge=MIN_DATA_PAYLOAD_BYTES,
        le=MAX_DATA_PAYLOAD_BYTES,
        description="payload bytes of each data message (livekit-server reads at most 64,000 B per message)",
    )
    data_channel: Literal["reliable", "lossy"] = Field(
        default="reliable", description="reliable (ordered, retransmitted) or lossy (unordered, no retransmission)"
    )
    data_topic: str = Field(default="", max_length=256, description="the UserPacket topic of each data message")
    data_to: str = Field(
        default="all", description="destinations of each data message: all (the room) or N (that many identities)"
    )
    data_burst: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="extra data messages each publisher sends back to back every data_burst_every",
    )
    data_burst_every_s: float = Field(default=10.0, gt=0, description="seconds between a data publisher's bursts")
    data_slow_readers: int = Field(
        default=0, ge=0, description="receivers per room (the last seats) that stop draining their data channels"
    )
    data_slow_pause_s: float = Field(default=3.0, gt=0, description="how long a slow reader stops draining, seconds")
    data_slow_every_s: float = Field(default=10.0, gt=0, description="a slow reader pauses once per this many seconds")
    data_tracks: int = Field(default=0, ge=0, le=1000, description="data-track publishers per room (the first seats)")
    data_track_rate: float = Field(default=30.0, gt=0, le=1000, description="frames per second per data track")
    data_track_size: int = Field(
        default=64,
        ge=0,
        le=MAX_DATA_TRACK_FRAME_BYTES,
        description="payload bytes of each data-track frame, sent as one packet (at most 15,000 B)",
    )
    simulcast: bool = Field(default=True, description="publish video as 3 simulcast layers (q, h, f)")
    talk_spurts: bool = Field(default=False, description="audio follows ITU-T P.59 talk spurts instead of a tone")
    probes: int = Field(default=0, ge=0, description="probe participants (aiortc, real codecs) per run")
    probe_fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="fraction of participants that are probes")
    probe_impair: str | None = Field(
        default=None, description="impairment of the probes' media, e.g. loss=2%,delay=40ms,jitter=10ms,rate=1mbit"
    )
    media_connect_timeout_s: float = Field(default=30.0, gt=0, description="ICE + DTLS deadline per PeerConnection")
    media_bind_ip: str = Field(default="127.0.0.1", description="local address of the PeerConnection sockets")
    json_frames: bool = Field(default=False, description="send text (protojson) frames instead of binary")
    signal_path: str = Field(
        default=DEFAULT_SIGNAL_PATH,
        description="v1 (/rtc/v1, one PeerConnection), v0 (/rtc, two), auto (v1, falling back to v0 on a 404, "
        "as today's SDKs do) or a mix such as v1:70,v0:30",
    )
    join_request_compression: Literal["gzip", "none"] = Field(
        default="gzip", description="compression of the /rtc/v1 join_request (gzip, as the JS SDK, or none)"
    )
    max_frame_bytes: int = Field(
        default=DEFAULT_MAX_FRAME_BYTES,
        ge=MIN_MAX_FRAME_BYTES,
        le=MAX_MAX_FRAME_BYTES,
        description="largest signal frame or message accepted; the process buffers at most 4 of them at once",
    )
    auto_subscribe: bool = True
    protocol: int = Field(default=CLIENT_PROTOCOL, ge=0)
    join_timeout_s: float = Field(default=15.0, gt=0)
    room_prefix: str = "lkswarm"
    identity_prefix: str = "p"
    seed: int | None = None
    resume_on_disconnect: bool = Field(default=False, description="resume (reconnect=1) when the WebSocket drops")
    run_tag: str = Field(default="", description="suffix that makes room names and identities unique per run")
    verify_rooms: bool = Field(default=True, description="compare each participant's room view with ListParticipants")
    insecure: bool = Field(
        default=False, description="wss:// and https:// without certificate or host name verification (reported)"
    )
    ca_file: str | None = Field(
        default=None, description="PEM CA bundle trusted besides the system's roots, for wss:// and https://"
    )

    stages: tuple[Stage, ...] = Field(default=(), description="k6-style stages; they set the run length")
    churn_rate: float = Field(default=0.0, ge=0, description="participants replaced per second while the load holds")
    reconnect_storm_at_s: float | None = Field(
        default=None, gt=0, description="at this time every joined participant drops its WebSocket and resumes"
    )
    reconnect_storm_mode: Literal["resume", "rejoin"] = Field(
        default="resume",
        description="resume: drop the WebSocket and resume (reconnect=1); rejoin: join afresh, with new "
        "PeerConnections, as the server's leave(RECONNECT) asks",
    )
    reconnect_storm_window_s: float = Field(
        default=0.0, ge=0, description="the storm's drops spread evenly over this window (0: all at one instant)"
    )
    layout: str | None = Field(default=None, description="subscriber video layout: speaker or grid:N")
    video_codec: Literal["vp8", "h264"] = Field(
        default="vp8", description="published video codec: vp8, or h264 (constrained baseline)"
    )

    @model_validator(mode="before")
    @classmethod
    def _all_publish(cls, data: object) -> object:
        """``audio_publishers = "all"`` (or video) means every seat of a room publishes."""
        if isinstance(data, dict):
            for key in ("audio_publishers", "video_publishers", "data_publishers"):
                if data.get(key) == "all":
                    data = {**data, key: data.get("participants", 10)}
        return data

    @field_validator(
        "duration_s",
        "reconnect_storm_at_s",
        "reconnect_storm_window_s",
        "data_burst_every_s",
        "data_slow_pause_s",
        "data_slow_every_s",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> float | None:
        return None if value is None else _duration_field(value)

    @field_validator("probe_impair")
    @classmethod
    def _probe_impair(cls, value: str | None) -> str | None:
        if value is not None:
            parse_impairment(value)  # raises ValueError naming the bad part
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None:
            _check_ca_file(value)
        return value

    @field_validator("signal_path")
    @classmethod
    def _signal_path(cls, value: str) -> str:
        parse_signal_path(value)  # raises ValueError naming the bad part
        return value.replace(" ", "")

    @field_validator("data_to")
    @classmethod
    def _data_to(cls, value: str) -> str:
        if value != "all" and not (value.isdigit() and int(value) > 0):
            raise ValueError(f"data_to must be all or a number of destination identities > 0, not {value!r}")
        return value

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str | None) -> str | None:
        if value is not None and not LAYOUT.match(value):
            raise ValueError(f"layout must be speaker or grid:N (N = 1..99), not {value!r}")
        return value

    @model_validator(mode="after")
    def _stages_set_duration(self) -> RunConfig:
        if self.stages:
            object.__setattr__(self, "duration_s", sum(stage.duration_s for stage in self.stages))
        if self.reconnect_storm_at_s is not None and self.reconnect_storm_at_s >= self.duration_s:
            raise ValueError(
                f"reconnect_storm_at ({self.reconnect_storm_at_s:g} s) must fall inside the run ({self.duration_s:g} s)"
            )
        storm_end_s = (self.reconnect_storm_at_s or 0.0) + self.reconnect_storm_window_s
        if self.reconnect_storm_window_s and (self.reconnect_storm_at_s is None or storm_end_s >= self.duration_s):
            raise ValueError(
                f"reconnect_storm_window ({self.reconnect_storm_window_s:g} s) needs reconnect_storm_at and must end "
                f"inside the run ({self.duration_s:g} s)"
            )
        if self.data_publishers and self.signal_only:
            raise ValueError("data messages travel over the media tier's data channels: drop --signal-only")
        if self.data_burst and not self.data_publishers:
            raise ValueError("data_burst adds to the data publishers' messages: set data_publishers too")
        if self.data_slow_readers and self.signal_only:
            raise ValueError("slow data readers stall the media tier's data channels: drop --signal-only")
        if self.data_slow_readers > self.participants and not self.stages:
            raise ValueError(
                f"{self.data_slow_readers} slow data readers per room but only {self.participants} participants"
            )
        if self.data_slow_readers and self.data_slow_pause_s >= self.data_slow_every_s:
            raise ValueError(
                f"data_slow_pause ({self.data_slow_pause_s:g} s) must be shorter than data_slow_every "
                f"({self.data_slow_every_s:g} s)"
            )
        if self.data_tracks and self.signal_only:
            raise ValueError("data tracks travel over the media tier's _data_track channel: drop --signal-only")
        if self.data_tracks > self.participants and not self.stages:
            raise ValueError(
                f"{self.data_tracks} data tracks per room but only {self.participants} participants per room"
            )
        if self.data_publishers > self.participants and not self.stages:
            raise ValueError(
                f"{self.data_publishers} data publishers per room but only {self.participants} participants per room"
            )
        publishers = self.audio_publishers + self.video_publishers
        if publishers > self.participants and not self.stages:  # with stages a room's size varies over the run
            raise ValueError(
                f"{publishers} publishers per room (audio {self.audio_publishers} + video {self.video_publishers}) "
                f"but only {self.participants} participants per room; use 'all' to make everyone publish"
            )
        return self

    @property
    def total_participants(self) -> int:
        """Participants of the initial population (without stages or churn, everyone)."""
        return self.rooms * self.participants

    @property
    def signal_path_weights(self) -> tuple[tuple[SignalPath, int], ...]:
        """``signal_path`` parsed: (path, weight) pairs, weights reduced."""
        return parse_signal_path(self.signal_path)

    @property
    def grid_tiles(self) -> int:
        """N of ``grid:N`` (0 for the speaker layout or none)."""
        return int(self.layout.split(":")[1]) if self.layout and self.layout.startswith("grid:") else 0

    def room_name(self, index: int) -> str:
        tag = f"-{self.run_tag}" if self.run_tag else ""
        return f"{self.room_prefix}{tag}-{index}"

    def identity(self, index: int) -> str:
        tag = f"-{self.run_tag}" if self.run_tag else ""
        return f"{self.identity_prefix}{index}{tag}"
