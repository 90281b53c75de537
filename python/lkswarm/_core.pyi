"""Type stubs for the native module ``lkswarm._core`` (kept honest by ``mypy.stubtest``)."""

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, final

from typing_extensions import Buffer

__version__: str
build_profile: str
#: Why str0m's receive path consumed an RTP datagram without delivering media (the report's keys).
STR0M_DROP_REASONS: tuple[str, ...]

@final
class MessageView:
    """A read-only view of one decoded protobuf message; fields read by their proto names."""

    @property
    def type_name(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...
    def present_fields(self) -> list[str]: ...
    def __getattr__(self, name: str) -> Any: ...
    def __eq__(self, other: object, /) -> bool: ...

def decode_request(buf: Buffer) -> MessageView: ...
def decode_response(buf: Buffer) -> MessageView: ...
def decode_message(type_name: str, buf: Buffer) -> MessageView: ...
def peek_request(buf: Buffer) -> str | None: ...
def peek_response(buf: Buffer) -> str | None: ...
def encode_request(mapping: Mapping[str, Any]) -> bytes: ...
def encode_response(mapping: Mapping[str, Any]) -> bytes: ...
def encode_message(type_name: str, mapping: Mapping[str, Any]) -> bytes: ...
def decode_response_json(text: str | Buffer) -> MessageView: ...
def decode_request_json(text: str | Buffer) -> MessageView: ...
def encode_request_json(mapping: Mapping[str, Any]) -> str: ...
def encode_response_json(mapping: Mapping[str, Any]) -> str: ...
def encode_ping(timestamp_ms: int, rtt_ms: int) -> bytes: ...
def encode_leave(reason: int, action: int = 0, can_reconnect: bool = False) -> bytes: ...
def encode_trickle(candidate_init: str, target: int, final: bool = False) -> bytes: ...
def encode_offer(sdp: str, id: int = 0) -> bytes: ...
def encode_answer(sdp: str, id: int = 0) -> bytes: ...
def encode_add_track(
    cid: str,
    name: str,
    type: int,
    source: int = 0,
    width: int = 0,
    height: int = 0,
    muted: bool = False,
    disable_dtx: bool = False,
    layers: Sequence[tuple[int, int, int, int]] = ...,
    stereo: bool = False,
    disable_red: bool = False,
    stream: str = "",
) -> bytes: ...
def encode_subscription(track_sids: Sequence[str], subscribe: bool = True) -> bytes: ...
def encode_update_metadata(
    metadata: str = "", name: str = "", attributes: Mapping[str, str] | None = None, request_id: int = 0
) -> bytes: ...
def schema_descriptor_set() -> bytes: ...
def noop(buf: object) -> None: ...
def ws_encode_frame(opcode: int, payload: Buffer, mask: bytes | None = None) -> bytes: ...
def ws_parse_frames(buf: Buffer, max_len: int) -> tuple[list[tuple[bool, int, bool, bytes]], int]: ...

@final
class PcConnected:
    """A PeerConnection connected (ICE and DTLS done); ``pc`` is LiveKit's SignalTarget (0 publisher, 1 subscriber).

    ``primary`` is True for the connection that makes the participant ACTIVE: the dual-PC subscriber
    PeerConnection, or a single-PC peer's one PeerConnection (reported as ``pc`` 0, the server's
    publisher PeerConnection). It defaults to ``pc == 1``.
    """

    __match_args__ = ("peer", "at_s", "pc", "primary")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, peer: int, at_s: float, pc: int, primary: bool | None = None) -> PcConnected: ...
    @property
    def peer(self) -> int: ...
    @property
    def at_s(self) -> float: ...
    @property
    def pc(self) -> int: ...
    @property
    def primary(self) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class IceStateChanged:
    """A PeerConnection's ICE state changed; ``pc`` is LiveKit's SignalTarget (0 publisher, 1 subscriber)."""

    __match_args__ = ("peer", "at_s", "pc", "state")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, peer: int, at_s: float, pc: int, state: str) -> IceStateChanged: ...
    @property
    def peer(self) -> int: ...
    @property
    def at_s(self) -> float: ...
    @property
    def pc(self) -> int: ...
    @property
    def state(self) -> str: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class FirstPacket:
    """The first RTP packet of a subscribed track; ``kind`` is ``"audio"`` or ``"video"``."""

    __match_args__ = ("peer", "at_s", "track_id", "kind")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, peer: int, at_s: float, track_id: str, kind: str) -> FirstPacket: ...
    @property
    def peer(self) -> int: ...
    @property
    def at_s(self) -> float: ...
    @property
    def track_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class MediaResumed:
    """After an ICE restart (signal resume), the primary PeerConnection's ICE is connected again and media flows.

    The restart is the server's offer with new ICE credentials (dual-PC, answered by ``accept_offer``)
    or ``MediaHub.ice_restart`` (single-PC). ``at_s`` is the first RTP packet's arrival after ICE
    reconnected, or the reconnection itself if no media is expected (the peer never received RTP, or
    every section it did is no longer receiving). Once per restart.
    """

    __match_args__ = ("peer", "at_s")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, peer: int, at_s: float) -> MediaResumed: ...
    @property
    def peer(self) -> int: ...
    @property
    def at_s(self) -> float: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class PeerFailed:
    """The peer is dead (first failure wins): ``reason`` is a short code, ``detail`` a sentence.

    Reasons: ``ice_timeout``, ``dtls_timeout``, ``dtls_failed``, ``ice_restart_timeout`` (an ICE
    restart did not bring ICE and media back within the connect timeout), ``ice_restart_rejected``
    (the answer to ``ice_restart``'s offer kept the old ICE credentials), ``internal_error``.
    """

    __match_args__ = ("peer", "at_s", "reason", "detail")
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __new__(cls, peer: int, at_s: float, reason: str, detail: str) -> PeerFailed: ...
    @property
    def peer(self) -> int: ...
    @property
    def at_s(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class MediaHub:
    """The light media tier: PeerConnections, their UDP sockets and a worker thread (rust/src/media/)."""

    def __new__(cls, bind_ip: str = "127.0.0.1", io: str | None = None) -> MediaHub:
        """``io`` forces the I/O backend ("io_uring" or "epoll"); None: ``LKSWARM_MEDIA_IO`` if set, else
        io_uring where the kernel allows it, else epoll."""
    @property
    def io_backend(self) -> str:
        """The media thread's I/O backend: "io_uring" or "epoll"."""
    @property
    def io_fallback(self) -> str | None:
        """Why io_uring was refused (one line), when the hub fell back to epoll on its own."""
    @property
    def thread_cpu_s(self) -> float | None:
        """CPU seconds the media thread has used (all of them once closed); None without a thread clock."""
    def set_library(
        self,
        audio: Sequence[tuple[bytes, bool]] | None,
        video_layers: Sequence[Sequence[tuple[bytes, bool]]],
        audio_frame_s: float = 0.02,
        video_frame_s: float = ...,
        video_codec: str = "vp8",
    ) -> None: ...
    def now_s(self) -> float: ...
    def add_peer(
        self,
        seed: int = 0,
        talk_spurts: bool = False,
        connect_timeout_s: float = 30.0,
        single_pc: bool = False,
        rpc_echo: bool = False,
    ) -> tuple[int, int]:
        """A peer and its socket: (peer id, local UDP port). ``single_pc``: one PeerConnection for both
        directions (``/rtc/v1``). ``rpc_echo``: every RPC call to it is answered with its payload, not refused
        as an unsupported method."""
    def accept_offer(self, peer: int, sdp: str) -> str: ...
    def publisher_offer(
        self, peer: int, audio_cid: str | None = None, video_cid: str | None = None, data: bool = False
    ) -> str:
        """The dual-PC publisher offer; with ``data`` it carries ``_reliable`` (ordered, reliable)
        and ``_lossy`` (unordered, no retransmissions), and may then have no track."""
    def join_offer(self, peer: int, audio_cid: str | None = None, video_cid: str | None = None) -> tuple[str, int]: ...
    def accept_answer(
        self, peer: int, sdp: str, mid_to_track_id: dict[str, str] | None = None
    ) -> tuple[str, int] | None: ...
    def reoffer(self, peer: int, num_audios: int, num_videos: int) -> tuple[str, int] | None: ...
    def ice_restart(self, peer: int) -> tuple[str, int]: ...
    def add_candidate(self, peer: int, target: int, candidate_init: str) -> None: ...
    def take_events(self) -> list[PcConnected | IceStateChanged | FirstPacket | MediaResumed | PeerFailed]: ...
    def events_fd(self) -> int: ...
    def data_publish(
        self,
        peer: int,
        channel: str,
        rate_hz: float,
        size_bytes: int,
        topic: str = "",
        destinations: Sequence[str] = ...,
        identity: str = "",
        burst_count: int = 0,
        burst_every_s: float = 0.0,
    ) -> None:
        """Sends probe DataPackets on ``channel`` ("reliable" or "lossy") every ``1/rate_hz`` s,
        on the media thread, from when that channel is open (dual-PC: the publisher
        PeerConnection's; single-PC: the one PeerConnection's). Replaces that channel's schedule.

        Each message is ``DataPacket{kind, user: UserPacket{payload, topic, nonce (16 B, unique),
        participant_identity=identity, destination_identities}, participant_identity=identity,
        destination_identities, sequence}``; ``sequence`` counts 1, 2, 3... per peer on reliable
        only. The payload is ``size_bytes`` (>= 20) long: ``b"LKSW"``, the send time (µs since the
        UNIX epoch, u64 big-endian), a counter per (peer, channel) from 0 (u64 BE), zero filler.
        A message the channel refuses (over its buffered amount) is counted ``send_blocked`` and
        dropped; after a stall over 100 ms overdue messages are skipped (``send_skipped``).
        With ``burst_count`` > 0, that many more messages go back to back every ``burst_every_s``
        from the channel's opening plus one period (``send_burst`` counts them).
        Raises ``MediaError`` for an unknown peer or channel, a rate outside (0, 1e6], a size
        under 20 B or over the 64,000 B message limit, or a burst over 10,000 messages or under 1 ms
        apart.
        """
    def data_stop(self, peer: int) -> None:
        """Stops the peer's probe messages on both channels."""
    def data_resend_after(self, peer: int, last_sequence: int) -> None:
        """After a signal resume: at the reliable channel's next write, writes again, unchanged, the
        kept reliable messages (the newest 64 KiB) whose ``sequence`` is past ``last_sequence``
        (``ReconnectResponse.last_message_seq``). ``resent`` counts them; ones past it no longer kept
        count ``resend_unavailable``."""
    def set_track_muted(self, peer: int, video: bool, muted: bool) -> None:
        """The server muted (or unmuted) the peer's audio or ``video`` track: while muted its frames
        fall due on the track's clock but are not sent (``peer_stats()["frames_muted"]``); on unmute
        the next one goes on time, video on a keyframe. Raises ``MediaError`` when the peer publishes
        no such track."""
    def data_slow_reader(self, peer: int, pause_s: float, every_s: float, first_after_s: float) -> None:
        """Makes the peer a slow data reader: from ``first_after_s`` on, for ``pause_s`` every
        ``every_s``, the DTLS records (the data channels) arriving on its primary PeerConnection are
        held (up to 4 MiB; more are dropped) and handed on when the pause ends; media and ICE keep
        flowing. ``peer_stats()["data"]["slow_reader"]`` has its figures. Raises ``MediaError`` for an
        unknown peer or a pause not shorter than its period."""
    def data_latency(self, slow_readers: bool = False) -> list[tuple[int, int]]:
        """One-way latency of every probe message received by any peer the hub has had: (µs, count)
        per non-empty bucket, ascending, as ``timer_lag`` (send time from the payload, receive time
        from the system clock; negative differences count as 0). With ``slow_readers``, the slow
        readers' alone; without, everyone else's."""
    def data_track_publish(self, peer: int, handle: int, rate_hz: float, size_bytes: int) -> None:
        """Writes one data-track frame every ``1/rate_hz`` s on the peer's ``_data_track`` channel (the
        media PeerConnection's), from when it opens; replaces any earlier schedule. Each frame is one
        packet: the 12-byte v0 header (S and F set, X set, ``handle``, a u16 sequence and frame number
        from 0, wrapping, the 90 kHz timestamp), the user-timestamp extension (id 2: send time, µs
        since the epoch) and ``size_bytes`` of filler. Refused writes count ``send_blocked``. Raises
        ``MediaError`` for an unknown peer, handle 0, a rate outside (0, 10000] or a frame over
        15,000 B."""
    def data_track_stop(self, peer: int) -> None:
        """Stops the peer's data-track frames."""
    def data_track_handles(self, peer: int, handles: list[tuple[int, str, str]]) -> None:
        """Replaces the peer's subscriber-handle map with ``(sub_handle, publisher_identity,
        track_sid)`` triples (the server's ``data_track_subscriber_handles``, the full map each time)."""
    def data_track_latency(self) -> list[tuple[int, int]]:
        """One-way latency of every timestamped data-track packet received by any peer the hub has
        had, as ``data_latency``."""
    def peer_stats(self, peer: int) -> dict[str, Any] | None:
        """Current figures of one peer. Its ``"data"`` dict: ``sent`` and ``bytes_sent`` (payload
        bytes) as ``{"reliable": n, "lossy": n}``; ``send_blocked``, ``send_skipped``, ``send_burst``;
        ``resumes``, ``resent``, ``resend_unavailable`` (``data_resend_after``); a slow reader's
        ``slow_reader``: ``pauses``, ``paused_ms``, ``held_datagrams``, ``dropped_datagrams``,
        ``max_held_bytes`` (absent for other peers); ``malformed``
        (unparsable DataPackets) and ``malformed_detail`` (the first error, ``"<label>: <why>"``);
        ``other`` (DataPackets that are not ``user``) and ``other_by_field`` (those by the DataPacket
        field number of their variant: 10 ``rpc_request``, 13 ``stream_header``, ...); ``rpc``: ``requests``
        (RPC calls to this peer), each counted once in ``answered`` (acked and refused "method not
        supported", 1400), ``no_channel`` (no reliable channel of ours to answer on), ``over_limit`` (past
        256 in one service of the peer), ``refused`` (the write refused) or ``unreadable``, or ``pending``
        (answers not written yet: waiting up to 3 s for a channel, or for the next service); ``channels_open``
        (labels, every PeerConnection); ``senders_overflow`` (messages of flows beyond 4096 per peer, not
        counted); ``received``: one dict per (sender identity, channel label) with ``sender``,
        ``channel``, ``received``, ``bytes`` (payload), ``duplicates``, ``out_of_order``,
        ``missing``, ``expected`` and ``foreign`` (payloads without the LKSW magic: counted, with
        no loss, order or latency figures). ``data["track"]``: ``frames_sent``, ``bytes_sent``,
        ``send_blocked``, ``send_skipped``, ``frames_received``, ``bytes_received``,
        ``unknown_handle`` (packets of handles no map named), ``malformed``, ``malformed_detail``,
        ``handle_maps`` and ``received``: one dict per subscriber handle with ``handle``,
        ``publisher``, ``track_sid`` ("" while unmapped), ``received``, ``bytes``, ``duplicates``,
        ``out_of_order``, ``missing``, ``expected`` (from the u16 sequence, unwrapped) and
        ``foreign`` (no user timestamp: no latency)."""
    def remove_peer(self, peer: int) -> dict[str, Any] | None:
        """Closes the peer's sockets and returns its final figures, as ``peer_stats``."""
    def totals(self) -> dict[str, int]:
        """Running totals over every peer the hub has had, including ``data_sent``,
        ``data_received`` and ``data_bytes_received`` (payload bytes), and ``syscalls``: the media
        thread's waits, naps, receives and sends (io_uring: ``io_uring_enter`` calls)."""
    def timer_lag(self) -> list[tuple[int, int]]: ...
    def timer_lag_above(self, limit_s: float) -> tuple[int, int]: ...
    @property
    def peer_count(self) -> int: ...
    @property
    def send_errors(self) -> int: ...
    def close(self) -> None: ...
