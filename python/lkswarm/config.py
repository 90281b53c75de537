"""The resolved scenario of one run: `RunConfig`, its fields checked by their declared rules
(`lkswarm.fields`); the report echoes it."""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lkswarm.errors import ConfigError
from lkswarm.fields import (
    FieldError,
    as_any,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_str,
    declare,
    from_mapping,
    json_fields,
    validate_fields,
)
from lkswarm.impairment import parse_impairment
from lkswarm.signal.enums import CLIENT_PROTOCOL
from lkswarm.signal.paths import DEFAULT_SIGNAL_PATH, SignalPath, parse_signal_path
from lkswarm.signal.websocket import DEFAULT_MAX_FRAME_BYTES, MAX_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
# Go's time.ParseDuration spelling, as `lk` and LiveKit's configs write durations: ``10m30s``, ``1h30m``.
_COMPOUND_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_ROOM_NAME_BYTES = 256  # livekit-server's default limit.max_room_name_length


def parse_duration_s(text: str | float) -> float:
    """``30``, ``30s``, ``2m``, ``1.5h``, ``500ms``, and Go's compound form (``10m30s``, ``1h30m``) → seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if match:
        return float(match.group(1)) * _UNIT_S[match.group(2)]
    if _COMPOUND_DURATION.fullmatch(text.strip()):
        return sum(float(number) * _UNIT_S[unit] for number, unit in _DURATION_PART.findall(text))
    raise ConfigError(f"invalid duration {text!r} (use e.g. 30, 30s, 2m, 10m30s)")


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


@dataclass(frozen=True)
class Stage:
    """One k6-style stage: move the live population linearly to ``target`` over ``duration_s``."""

    # stage length (seconds, or 30s / 2m in files)
    duration_s: float = declare(dataclasses.MISSING, as_float, gt=0, before=_duration_field)
    # live participants (all rooms) at the end of the stage
    target: int = declare(dataclasses.MISSING, as_int, ge=0, le=1_000_000)

    def __post_init__(self) -> None:
        validate_fields(self)


def _stages(value: object) -> tuple[Stage, ...]:
    """``stages`` as given (a list of tables or `Stage`s), as a tuple of stages; errors name the index."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of stages, not {value!r}")
    stages = []
    for index, item in enumerate(value):
        if isinstance(item, Stage):
            stages.append(item)
        elif isinstance(item, Mapping):
            try:
                stages.append(from_mapping(Stage, item))
            except FieldError as exc:
                raise exc.under((index,)) from None
        else:
            raise FieldError((index,), f"must be a table with duration_s and target, not {item!r}")
    return tuple(stages)


def _check_probe_impair(value: str) -> None:
    parse_impairment(value)  # raises ValueError naming the bad part


def _check_server_metrics(value: str) -> None:
    scheme, _, rest = value.partition("://")
    if "@" in rest.split("/", 1)[0]:  # never echoed: it may hold a password
        raise ValueError("server_metrics must not carry credentials (user:password@host)")
    if scheme not in ("http", "https") or not rest:
        raise ValueError(f"server_metrics must be the server's http(s)://HOST:PORT/metrics URL, not {value!r}")


def _check_data_to(value: str) -> None:
    if value != "all" and not (value.isdigit() and int(value) > 0):
        raise ValueError(f"data_to must be all or a number of destination identities > 0, not {value!r}")


def _check_room(value: str) -> None:
    # Its length is checked with the -N of several rooms (`_check_together`).
    if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("room must be printable characters, not blank")


def _check_layout(value: str) -> None:
    if not LAYOUT.match(value):
        raise ValueError(f"layout must be speaker or grid:N (N = 1..99), not {value!r}")


def _signal_path(value: object) -> object:
    if isinstance(value, str):
        parse_signal_path(value)  # raises ValueError naming the bad part
        return value.replace(" ", "")
    return value


def data_packet_overhead_bytes(config: RunConfig) -> int:
    """An upper bound of what a data message's DataPacket adds to its payload (``media/data/packet.rs``): the
    sender's identity and each destination's, twice each (UserPacket's and DataPacket's fields), the topic, the
    16-byte nonce, the sequence, the kind and the field headers, each length taken at 3 varint bytes. Identities
    are bounded by a 10-digit index and a 6-character run tag, what `pinned` draws when none was given."""
    identity = len(config.identity_prefix) + 10 + 1 + max(len(config.run_tag), 6)
    destinations = 0 if config.data_to == "all" else int(config.data_to)
    field = 1 + 3  # a tag and a length
    strings = 2 * (field + identity) * (1 + destinations) + field + len(config.data_topic.encode())
    return strings + (field + 16) + 6 + 2 + 2 * field  # nonce, sequence, kind, the user and payload headers


MIN_DATA_PAYLOAD_BYTES = 20  # our stamp: magic, send time, counter (lkswarm.media.data)
MAX_DATA_TRACK_FRAME_BYTES = 15_000  # one packet per frame; the JS SDK packetizes at a 16,000 B MTU
MAX_DATA_PACKET_BYTES = 64_000  # livekit-server reads a data channel message into 65,535 bytes; the SDKs cap at 64,000
MAX_DATA_PAYLOAD_BYTES = MAX_DATA_PACKET_BYTES  # a payload's own bound; `data_packet_overhead_bytes` takes the rest
LAYOUT = re.compile(r"^(speaker|grid:[1-9][0-9]?)$")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; the CLI and scenario files fill it in. Each field's rule is declared
    beside it (`lkswarm.fields.declare`) and checked on construction, then the rules between fields."""

    # Server URL; None starts an embedded local server
    url: str | None = declare(None, as_str, optional=True)
    # the server's Prometheus /metrics URL (the embedded server's is known)
    server_metrics: str | None = declare(None, as_str, optional=True, check=_check_server_metrics)
    rooms: int = declare(1, as_int, ge=1, le=100_000)
    participants: int = declare(10, as_int, ge=1, le=1_000_000)  # per room
    rate: float = declare(20.0, as_float, gt=0)  # joins started per second
    arrival: Literal["constant", "poisson"] = declare("constant", as_choice, choices=("constant", "poisson"))
    duration_s: float = declare(10.0, as_float, gt=0, before=_duration_field)
    # signaling only: no PeerConnections (evicted after 60 s)
    signal_only: bool = declare(False, as_bool)
    audio_publishers: int = declare(0, as_int, ge=0)  # per room ("all": every seat)
    video_publishers: int = declare(0, as_int, ge=0)  # per room ("all": every seat)
    data_publishers: int = declare(0, as_int, ge=0)  # data-message publishers per room (the first seats)
    data_rate: float = declare(1.0, as_float, gt=0, le=1000)  # data messages per second per data publisher
    # payload bytes of each data message (livekit-server reads at most 64,000 B per message)
    data_size: int = declare(200, as_int, ge=MIN_DATA_PAYLOAD_BYTES, le=MAX_DATA_PAYLOAD_BYTES)
    # reliable (ordered, retransmitted) or lossy (unordered, no retransmission)
    data_channel: Literal["reliable", "lossy"] = declare("reliable", as_choice, choices=("reliable", "lossy"))
    data_topic: str = declare("", as_str, max_length=256)  # the UserPacket topic of each data message
    # destinations of each data message: all (the room) or N (that many identities)
    data_to: str = declare("all", as_str, check=_check_data_to)
    # extra data messages each publisher sends back to back every data_burst_every
    data_burst: int = declare(0, as_int, ge=0, le=10_000)
    data_burst_every_s: float = declare(10.0, as_float, gt=0, before=_duration_field)  # between a publisher's bursts
    # receivers per room (the last seats) that stop draining their data channels
    data_slow_readers: int = declare(0, as_int, ge=0)
    data_slow_pause_s: float = declare(3.0, as_float, gt=0, before=_duration_field)  # how long a slow reader stops
    data_slow_every_s: float = declare(10.0, as_float, gt=0, before=_duration_field)  # a slow reader pauses this often
    data_tracks: int = declare(0, as_int, ge=0, le=1000)  # data-track publishers per room (the first seats)
    data_track_rate: float = declare(30.0, as_float, gt=0, le=1000)  # frames per second per data track
    # payload bytes of each data-track frame, sent as one packet (at most 15,000 B)
    data_track_size: int = declare(64, as_int, ge=0, le=MAX_DATA_TRACK_FRAME_BYTES)
    # RPC calls to our participants answered with their payload (every method), not refused as unsupported (1400)
    rpc_echo: bool = declare(False, as_bool)
    simulcast: bool = declare(True, as_bool)  # publish video as 3 simulcast layers (q, h, f)
    talk_spurts: bool = declare(False, as_bool)  # audio follows ITU-T P.59 talk spurts instead of a tone
    probes: int = declare(0, as_int, ge=0)  # probe participants (aiortc, real codecs) per run
    probe_fraction: float = declare(0.0, as_float, ge=0.0, le=1.0)  # fraction of participants that are probes
    # impairment of the probes' media, e.g. loss=2%,delay=40ms,jitter=10ms,rate=1mbit
    probe_impair: str | None = declare(None, as_str, optional=True, check=_check_probe_impair)
    media_connect_timeout_s: float = declare(30.0, as_float, gt=0, before=_duration_field)  # ICE + DTLS deadline per PC
    media_bind_ip: str = declare("127.0.0.1", as_str)  # local address of the PeerConnection sockets
    json_frames: bool = declare(False, as_bool)  # send text (protojson) frames instead of binary
    # v1 (/rtc/v1, one PeerConnection), v0 (/rtc, two), auto (v1, falling back to v0 on a 404, as today's
    # SDKs do) or a mix such as v1:70,v0:30
    signal_path: str = declare(DEFAULT_SIGNAL_PATH, as_str, before=_signal_path)
    # compression of the /rtc/v1 join_request (gzip, as the JS SDK, or none)
    join_request_compression: Literal["gzip", "none"] = declare("gzip", as_choice, choices=("gzip", "none"))
    # largest signal frame or message accepted; the process buffers at most 4 of them at once
    max_frame_bytes: int = declare(DEFAULT_MAX_FRAME_BYTES, as_int, ge=MIN_MAX_FRAME_BYTES, le=MAX_MAX_FRAME_BYTES)
    auto_subscribe: bool = declare(True, as_bool)
    protocol: int = declare(CLIENT_PROTOCOL, as_int, ge=0)
    join_timeout_s: float = declare(15.0, as_float, gt=0, before=_duration_field)
    room_prefix: str = declare("lkswarm", as_str)
    # one named room (an existing one too) instead of room_prefix + run tag; with rooms > 1, room-0, room-1, ...
    room: str | None = declare(None, as_str, optional=True, check=_check_room)
    identity_prefix: str = declare("p", as_str)
    seed: int | None = declare(None, as_int, optional=True, ge=0, le=2**63 - 1)
    resume_on_disconnect: bool = declare(False, as_bool)  # resume (reconnect=1) when the WebSocket drops
    run_tag: str = declare("", as_str)  # suffix that makes room names and identities unique per run
    verify_rooms: bool = declare(True, as_bool)  # compare each participant's room view with ListParticipants
    # wss:// and https:// without certificate or host name verification (reported)
    insecure: bool = declare(False, as_bool)
    # PEM CA bundle trusted besides the system's roots, for wss:// and https://
    ca_file: str | None = declare(None, as_str, optional=True, check=_check_ca_file)

    stages: tuple[Stage, ...] = declare((), as_any, before=_stages)  # k6-style stages; they set the run length
    churn_rate: float = declare(0.0, as_float, ge=0)  # participants replaced per second while the load holds
    # at this time every joined participant drops its WebSocket and resumes
    reconnect_storm_at_s: float | None = declare(None, as_float, optional=True, gt=0, before=_duration_field)
    # resume: drop the WebSocket and resume (reconnect=1); rejoin: join afresh, with new PeerConnections, as
    # the server's leave(RECONNECT) asks
    reconnect_storm_mode: Literal["resume", "rejoin"] = declare("resume", as_choice, choices=("resume", "rejoin"))
    # the storm's drops spread evenly over this window (0: all at one instant)
    reconnect_storm_window_s: float = declare(0.0, as_float, ge=0, before=_duration_field)
    layout: str | None = declare(None, as_str, optional=True, check=_check_layout)  # speaker or grid:N
    video_codec: Literal["vp8", "h264"] = declare(
        "vp8", as_choice, choices=("vp8", "h264")
    )  # vp8, or h264 (constrained baseline)

    def __post_init__(self) -> None:
        # ``audio_publishers = "all"`` (or video, or data) means every seat of a room publishes.
        for key in ("audio_publishers", "video_publishers", "data_publishers"):
            if getattr(self, key) == "all":
                object.__setattr__(self, key, self.participants)
        validate_fields(self)
        try:
            self._check_together()
        except ValueError as exc:
            raise FieldError((), str(exc)) from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RunConfig:
        """A configuration from a scenario file's keys, flags or a job's JSON (unknown keys refused)."""
        return from_mapping(cls, data)

    def replace(self, **changes: Any) -> RunConfig:
        """This configuration with ``changes`` (checked again, as a new one is)."""
        return dataclasses.replace(self, **changes)

    def pinned(self) -> RunConfig:
        """This configuration with its run tag and seed drawn now where they were left to chance: every process
        and tier that builds the run's plan (workers, Ray actors, probes, a crashed share's stand-in) must
        build the same one, and the report's ``config`` then says how to run the same plan again."""
        import secrets

        changes: dict[str, Any] = {}
        if not self.run_tag:
            changes["run_tag"] = secrets.token_hex(3)
        if self.seed is None:
            changes["seed"] = secrets.randbits(31)
        return self.replace(**changes) if changes else self

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON-ready data (the report's ``config``; a worker's job rebuilds it with `from_mapping`)."""
        return json_fields(self)

    def _check_together(self) -> None:
        """The rules between fields (after each field's own)."""
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
        # livekit-server refuses a longer name with an HTTP 400 at every join (its limit.max_room_name_length,
        # counted in UTF-8 bytes); the longest of ours is the last, with its -N.
        if self.room is not None and len(last := self.room_name(self.rooms - 1).encode()) > MAX_ROOM_NAME_BYTES:
            raise ValueError(
                f"room: {len(last)} bytes of UTF-8{' with its -N' if self.rooms > 1 else ''}, past the server's "
                f"{MAX_ROOM_NAME_BYTES}: use a shorter name"
            )
        if self.data_publishers and self.signal_only:
            raise ValueError("data messages travel over the media tier's data channels: drop --signal-only")
        if self.rpc_echo and self.signal_only:
            raise ValueError("RPC calls arrive over the media tier's data channels: drop --signal-only or --rpc-echo")
        if self.data_burst and not self.data_publishers:
            raise ValueError("data_burst adds to the data publishers' messages: set data_publishers too")
        if self.data_to != "all" and not self.data_publishers:
            raise ValueError("data_to chooses the data publishers' destinations: set data_publishers too")
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
        overhead = data_packet_overhead_bytes(self)
        if self.data_publishers and self.data_size + overhead > MAX_DATA_PACKET_BYTES:
            raise ValueError(
                f"data_size {self.data_size} B leaves no room for the DataPacket around it (identity, topic, "
                f"destinations: up to {overhead} B here) within livekit's {MAX_DATA_PACKET_BYTES:,} B message "
                f"limit: at most {MAX_DATA_PACKET_BYTES - overhead} B"
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
        if self.room is not None:
            # Named by the user: no run tag, so that the load lands in the room they named (their app's own,
            # say). Identities keep the tag, so two runs into one room never take each other's seats.
            return self.room if self.rooms == 1 else f"{self.room}-{index}"
        tag = f"-{self.run_tag}" if self.run_tag else ""
        return f"{self.room_prefix}{tag}-{index}"

    def identity(self, index: int) -> str:
        tag = f"-{self.run_tag}" if self.run_tag else ""
        return f"{self.identity_prefix}{index}{tag}"
