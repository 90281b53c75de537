"""The aiortc half of one probe: its two RTCPeerConnections, on the probe tier's event loop.

Theory of operation
-------------------
Everything here runs on the probe loop (``lkswarm.probe.tier.ProbeTier``), never on
the generator's loop. The main side hands operations over in signaling order;
`ProbePeer` runs them one at a time from a queue, so an ICE candidate can
never overtake the offer it belongs to::

    ANSWER_OFFER(sdp, id)  subscriber PC: setRemoteDescription(offer) -> answer ──> emit PeerAnswered
                           (a re-offer waits until the subscriber PC is connected: see _answer_offer)
    PUBLISH(audio, video)  publisher PC: addTrack x2 (one video codec) -> offer ──> emit PeerOffered
    accept_answer(sdp)     publisher PC: setRemoteDescription(answer)
    add_candidate(t, c)    queued until PC ``t`` has its remote description
    close()

aiortc gathers its candidates before an SDP is produced, so our candidates
travel inside the SDP and none are trickled. Connection states come back as
events: "connected" (per PC), "failed" with a reason (``probe_ice_failed``,
``probe_dtls_failed``, ``probe_connect_timeout``, ``probe_setup``). Every
subscribed track gets a consumer task that takes each decoded frame from
aiortc and hands it to `VideoReceiveStats` / `AudioReceiveStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame, VideoFrame

from lkswarm.metrics import new_histogram
from lkswarm.probe.aiortc_patches import bind_probe_address, drain_jitter_buffer
from lkswarm.probe.capture import (
    AudioReceiveStats,
    CaptureRegistry,
    ProbeAudioTrack,
    ProbeVideoTrack,
    VideoReceiveStats,
)
from lkswarm.probe.ops import EmitFn, PeerAnswered, PeerConnected, PeerFailed, PeerOffered, ProbeOp
from lkswarm.signal.enums import SignalTarget

TARGET_PUBLISHER: int = SignalTarget.PUBLISHER
TARGET_SUBSCRIBER: int = SignalTarget.SUBSCRIBER
CLOSE_TIMEOUT_S = 5.0


def parse_candidate(candidate_init: str) -> RTCIceCandidate | None:
    """An aiortc candidate from livekit's JSON RTCIceCandidateInit; None for end-of-candidates."""
    init = json.loads(candidate_init)
    text = str(init.get("candidate") or "")
    if not text:
        return None
    candidate = candidate_from_sdp(text.removeprefix("candidate:"))
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    return candidate


class ProbePeer:
    """One probe's PeerConnections, operations queue and receive statistics."""

    def __init__(
        self,
        slot: int,
        registry: CaptureRegistry,
        emit: EmitFn,
        connect_timeout_s: float,
        bind_ip: str | None = None,
        video_codec: str = "vp8",
    ) -> None:
        self.slot = slot
        self.video_codec = video_codec  # what the probe publishes: the run's --video-codec
        self.bind_ip = bind_ip  # this probe's own address (an impaired namespace); None: the tier's
        self.registry = registry
        self.emit = emit
        self.connect_timeout_s = connect_timeout_s
        self.subscriber: RTCPeerConnection | None = None
        self.publisher: RTCPeerConnection | None = None
        self.video_rx: list[VideoReceiveStats] = []
        self.audio_rx: list[AudioReceiveStats] = []
        self.e2e_ms = new_histogram()  # video capture -> decode, every track this probe decodes
        self.failed = False
        self.closed = False
        self._closing = False
        self._final_receive_stats: dict[str, dict[str, int]] | None = None  # taken as it closed
        self._has_remote = {TARGET_PUBLISHER: False, TARGET_SUBSCRIBER: False}
        self._pending: dict[int, list[RTCIceCandidate]] = {TARGET_PUBLISHER: [], TARGET_SUBSCRIBER: []}
        self._ops: asyncio.Queue[Callable[[], Awaitable[None]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._deferred_offer: tuple[str, int] | None = None

    # -- entry points (called on the probe loop, in signaling order) ----------------------------------

    def submit(self, op: ProbeOp, *args: Any) -> None:
        """Queues one operation; they run one at a time, in the order signaling submitted them."""
        if self.closed:
            return
        if self._ops is None:
            self._ops = asyncio.Queue()
            self._spawn(self._run_ops())
        method = self._operation(op)
        self._ops.put_nowait(lambda: method(*args))

    def _operation(self, op: ProbeOp) -> Callable[..., Awaitable[None]]:
        if op is ProbeOp.ANSWER_OFFER:
            return self._answer_offer
        if op is ProbeOp.PUBLISH:
            return self._publish
        if op is ProbeOp.ACCEPT_ANSWER:
            return self._accept_answer
        return self._add_candidate

    async def _run_ops(self) -> None:
        assert self._ops is not None
        if self.bind_ip is not None:  # every PeerConnection gathers in this task (or tasks it starts)
            bind_probe_address(self.bind_ip)
        while not self.closed:
            op = await self._ops.get()
            try:
                await op()
            except Exception as exc:  # a refused SDP or candidate fails this probe only
                self._fail("probe_setup", f"{type(exc).__name__}: {exc}")

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- operations ---------------------------------------------------------------------------------

    def _new_pc(self, target: int) -> RTCPeerConnection:
        # No STUN: livekit's candidates suffice. max-bundle, as the SDKs do, and because aiortc's default
        # ("balanced") hands a new transceiver the not-yet-bundled transport of an earlier one of its kind
        # from the same offer, which the bundling step then discards: with two audio tracks appearing in
        # one re-offer, the second one never receives a packet.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        name = "subscriber" if target == TARGET_SUBSCRIBER else "publisher"

        def on_state() -> None:
            if pc.connectionState == "connected":
                self.emit(PeerConnected(time.perf_counter(), SignalTarget(target)))
                if target == TARGET_SUBSCRIBER and self._deferred_offer is not None:
                    self.submit(ProbeOp.ANSWER_OFFER, *self._deferred_offer)
                    self._deferred_offer = None
            elif pc.connectionState == "failed":
                ice_failed = pc.iceConnectionState == "failed"
                reason = "probe_ice_failed" if ice_failed else "probe_dtls_failed"
                self._fail(reason, f"{name} PeerConnection failed (ICE {pc.iceConnectionState})")

        pc.on("connectionstatechange", on_state)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.connect_timeout_s, self._check_connected, pc, name))
        return pc

    def _check_connected(self, pc: RTCPeerConnection, name: str) -> None:
        if not self.closed and pc.connectionState != "connected":
            detail = f"{name} PeerConnection not connected after {self.connect_timeout_s:.0f} s"
            self._fail("probe_connect_timeout", f"{detail} (ICE {pc.iceConnectionState}, {pc.connectionState})")

    async def _answer_offer(self, sdp: str, offer_id: int) -> None:
        if self.subscriber is None:
            self.subscriber = self._new_pc(TARGET_SUBSCRIBER)
            self.subscriber.on("track", self._on_track)
        elif self.subscriber.connectionState != "connected":
            # aiortc starts the receivers of a re-offer's new tracks only if DTLS is already connected
            # when the offer is applied (while DTLS is "connecting" its connect step skips them, and
            # nothing retries), so a re-offer during the first handshake waits for it. livekit sends its
            # next offer only after our answer, so at most one offer waits.
            self._deferred_offer = (sdp, offer_id)
            return
        pc = self.subscriber
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self._remote_ready(TARGET_SUBSCRIBER)
        await pc.setLocalDescription(await pc.createAnswer())
        self.emit(PeerAnswered(time.perf_counter(), pc.localDescription.sdp, offer_id))

    async def _publish(self, audio_cid: str, video_cid: str) -> None:
        pc = self.publisher = self._new_pc(TARGET_PUBLISHER)
        log = self.registry.log(self.slot)
        pc.addTrack(ProbeAudioTrack(audio_cid, log))
        video = pc.addTransceiver(ProbeVideoTrack(video_cid, self.slot, log), direction="sendonly")
        # The run's codec only, as the light tier offers it: aiortc encodes H.264 with libx264 too.
        mime = {"vp8": "video/VP8", "h264": "video/H264"}[self.video_codec]
        codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in (mime, "video/rtx")]
        video.setCodecPreferences(codecs)
        await pc.setLocalDescription(await pc.createOffer())
        self.emit(PeerOffered(time.perf_counter(), pc.localDescription.sdp))

    async def _accept_answer(self, sdp: str) -> None:
        if self.publisher is None:
            return
        await self.publisher.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._remote_ready(TARGET_PUBLISHER)

    async def _add_candidate(self, target: int, candidate_init: str) -> None:
        candidate = parse_candidate(candidate_init)
        if candidate is None:
            return
        pc = self.subscriber if target == TARGET_SUBSCRIBER else self.publisher
        if pc is None or not self._has_remote[target]:
            self._pending[target].append(candidate)
        else:
            await pc.addIceCandidate(candidate)

    async def _remote_ready(self, target: int) -> None:
        self._has_remote[target] = True
        pc = self.subscriber if target == TARGET_SUBSCRIBER else self.publisher
        assert pc is not None
        pending, self._pending[target] = self._pending[target], []
        for candidate in pending:
            await pc.addIceCandidate(candidate)

    # -- receiving -----------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        pc = self.subscriber
        assert pc is not None
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is track:
                drain_jitter_buffer(transceiver.receiver)  # see lkswarm.probe.aiortc_patches
        self._spawn(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        """Takes every frame aiortc decodes for one subscribed track (its id is livekit's track sid)."""
        if track.kind == "video":
            video = VideoReceiveStats(self.registry, self.e2e_ms, track.id)
            self.video_rx.append(video)
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    video.ended = True
                    return
                if isinstance(frame, VideoFrame):
                    video.on_frame(frame, time.perf_counter())
        elif track.kind == "audio":
            audio = AudioReceiveStats(self.registry, track.id)
            self.audio_rx.append(audio)
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if isinstance(frame, AudioFrame):
                    audio.on_frame(frame, time.perf_counter())

    async def receive_stats(self) -> dict[str, dict[str, int]]:
        """aiortc's RFC 3550 receive counters per kind: packets received and lost (after NACK recovery)."""
        if self._final_receive_stats is not None:  # closed: what it had received when it closed
            return self._final_receive_stats
        out = {kind: {"packets_received": 0, "packets_lost": 0} for kind in ("audio", "video")}
        pc = self.subscriber
        if pc is None or self.closed:
            return out
        for transceiver in pc.getTransceivers():
            if transceiver.receiver.track is None:
                continue
            report = await transceiver.receiver.getStats()
            for stats in report.values():
                if getattr(stats, "type", "") == "inbound-rtp" and stats.kind in out:
                    out[stats.kind]["packets_received"] += stats.packetsReceived
                    out[stats.kind]["packets_lost"] += max(0, stats.packetsLost)
        return out

    def connection_states(self) -> dict[str, dict[str, str]]:
        """Each PeerConnection's ICE and overall state, by name (``subscriber``, ``publisher``)."""
        named = (("subscriber", self.subscriber), ("publisher", self.publisher))
        return {name: {"ice": pc.iceConnectionState, "connection": pc.connectionState} for name, pc in named if pc}

    # -- endings -------------------------------------------------------------------------------------

    def _fail(self, reason: str, detail: str) -> None:
        if self.failed or self.closed:
            return
        self.failed = True
        self.emit(PeerFailed(time.perf_counter(), reason, detail))
        self._spawn(self.close())

    def close_soon(self) -> None:
        """`close` from a plain callback (the main loop asks for it with ``call_soon_threadsafe``)."""
        self._spawn(self.close())

    async def close(self) -> None:
        if self.closed or self._closing:
            return
        self._closing = True
        # Its counters die with the PeerConnection: a probe that failed or left before the end (likely the
        # lossiest) kept its frames in the totals but dropped its packets and losses.
        with contextlib.suppress(Exception):  # aiortc's stats of a half-torn-down connection: best effort
            self._final_receive_stats = await asyncio.wait_for(self.receive_stats(), CLOSE_TIMEOUT_S)
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                # Closing is best effort: the tier's loop goes away next anyway.
                with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                    await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT_S)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
