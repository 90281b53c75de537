"""The probe tier: a sampled subset of participants on aiortc, with real encode and decode, on its own thread.

Theory of operation
-------------------
`lkswarm.probe.seats.probe_seats` picks which seats of which rooms are probes (see its
docstring); whoever the plan puts in such a seat is a probe. Its driver gets
a `ProbeLeg` instead of the light tier's `LightLeg`; it speaks the same signaling through the
same `SignalSession`, but its PeerConnections are aiortc's, and it publishes
VP8 + Opus with frame identity (``lkswarm.probe.capture``) and decodes what it
subscribes to.

Threads: aiortc does its RTP, RTCP, SRTP and jitter-buffer work in Python, so
it runs on a dedicated event loop in the ``lkswarm-probe-loop`` thread and
never on the generator's loop, where it would show up as signaling latency.
aiortc decodes on its own threads (``video-decoder``, ``audio-decoder``) and
encodes on the probe loop's executor (``lkswarm-probe-codec-*``). Signaling
crosses between the loops in both directions with ``call_soon_threadsafe``::

    main loop                                       probe loop
    session events ── submit(ProbeOp) ─────────────> ProbePeer op queue
    ProbeLeg.on_peer_event <── post(event) ── PeerAnswered / PeerOffered / PeerConnected / PeerFailed
                                     (tagged with the join it belongs to; a replaced peer's are dropped)

CPU accounting: every 0.5 s (and at the end) the tier reads the CPU
time of each probe thread from ``/proc/self/task/<tid>/stat`` (10 ms ticks)
and keeps each thread's latest value, so threads that end early still count
(up to one sample period is lost). The report shows it as ``probes.cpu_s``
and subtracts it from ``generator.cpu_s``. The probe loop's own lag is
measured like the main loop's; when it or the loop thread's CPU share says
the probe loop was saturated, the report warns that probe figures include
the generator's own queueing. The GIL is still shared: heavy probe work also
delays the main loop, which its own lag figure shows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lkswarm.engine.leg import LegFilters, SignalingLeg
from lkswarm.engine.plan import Arrival
from lkswarm.engine.ports import MediaCounts, ParticipantHost, RunContext
from lkswarm.errors import MediaError
from lkswarm.metrics import new_histogram, record_ms
from lkswarm.probe.ops import PeerAnswered, PeerConnected, PeerEvent, PeerFailed, PeerOffered, ProbeOp
from lkswarm.probe.seats import probe_seats
from lkswarm.probe.totals import ProbeTotals, collect_peer
from lkswarm.signal.enums import SignalTarget, TrackType
from lkswarm.signal.events import RemoteTrackPublished, TrackPublished
from lkswarm.signal.requests import VideoLayer, add_audio_track, add_video_track, track_setting

if TYPE_CHECKING:
    from lkswarm.probe.netns import ProbeNetwork
    from lkswarm.probe.peer import ProbePeer

LOOP_THREAD_NAME = "lkswarm-probe-loop"
EXECUTOR_PREFIX = "lkswarm-probe-codec"
DECODER_THREAD_NAMES = frozenset({"video-decoder", "audio-decoder"})  # named by aiortc's RTCRtpReceiver
LAG_INTERVAL_S = 0.05  # as the main loop's monitor
CPU_SAMPLE_TICKS = 10  # thread CPU is read every 10 lag ticks (0.5 s)
CODEC_WORKERS = 2
SHUTDOWN_TIMEOUT_S = 10.0
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ThreadCpu:
    """Latest CPU seconds of each probe thread (Linux /proc; zero elsewhere)."""

    def __init__(self) -> None:
        self.seconds: dict[threading.Thread, float] = {}

    def sample(self, names: Callable[[str], bool]) -> None:
        for thread in threading.enumerate():
            if thread.native_id is None or not names(thread.name):
                continue
            try:
                with open(f"/proc/self/task/{thread.native_id}/stat") as handle:
                    fields = handle.read().rpartition(")")[2].split()
            except OSError:
                continue  # ended between enumerate() and the read
            self.seconds[thread] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S

    def total_s(self, names: Callable[[str], bool] | None = None) -> float:
        return sum(s for t, s in self.seconds.items() if names is None or names(t.name))


def is_probe_thread(name: str) -> bool:
    return name == LOOP_THREAD_NAME or name.startswith(EXECUTOR_PREFIX) or name in DECODER_THREAD_NAMES


class DecodeErrorCounter(logging.Filter):
    """Counts (and keeps off stderr) aiortc's "failed to decode" warnings, logged from its decoder threads."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if "failed to decode" in str(record.msg):
            with self._lock:
                self.count += 1
            return False
        return True


class ProbeTier(LegFilters["ProbeLeg"]):
    """The probe tier of a run: the probe loop thread, the probes, CPU accounting and the totals (a `MediaTier`)."""

    def __init__(
        self,
        run: RunContext,
        plan: Sequence[Arrival],
        worker: tuple[int, int] = (0, 1),
        network: ProbeNetwork | None = None,
    ) -> None:
        try:  # aiortc is imported only when probes run, and here, before the clock starts
            from lkswarm.probe import peer  # noqa: F401
            from lkswarm.probe.capture import CaptureRegistry
        except ImportError as exc:
            raise MediaError(f"the probe tier needs aiortc ({exc}); pip install 'aiortc>=1.16'") from None

        super().__init__()
        self.run = run
        self.network = network  # the probes' impaired namespace (lkswarm.probe.netns), if any
        index, count = worker
        seats = {seat: slot for seat, slot in probe_seats(run.config).items() if seat[0] % count == index}
        self.count = len(seats)
        # Plan index -> publisher slot of every participant that sits in a probe seat.
        self.slots = {a.index: seats[(a.room_index, a.seat)] for a in plan if (a.room_index, a.seat) in seats}
        self.identities = {run.config.identity(index) for index in self.slots}
        self.registry = CaptureRegistry()
        self.participants: list[ProbeLeg] = []
        self.failures: list[dict[str, str]] = []
        self.loop_lag = new_histogram()
        self.cpu = ThreadCpu()
        self.decode_errors = DecodeErrorCounter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sampler: asyncio.TimerHandle | None = None
        self._started_at = 0.0
        self._patches = contextlib.ExitStack()  # aiortc adaptations that last while the tier runs
        self.totals: ProbeTotals | None = None  # set by collect()

    def claims(self, index: int) -> bool:
        return index in self.slots

    def is_probe(self, index: int) -> bool:
        return self.claims(index)

    def attach(self, host: ParticipantHost) -> ProbeLeg:
        participant = ProbeLeg(self, host, self.slots[host.index])
        self.participants.append(participant)
        return participant

    def running_counts(self) -> MediaCounts | None:
        return None  # probes read aiortc's statistics once, at the end

    def saturation(self) -> str:
        return ""  # the probe loop's saturation is judged at the end (ProbeTotals.saturated)

    # -- the probe loop ------------------------------------------------------------------------------

    async def start(self) -> None:
        from lkswarm.probe.aiortc_patches import host_addresses
        from lkswarm.probe.capture import warm_up

        # Render the test pattern and tone before the clock starts: on the probe thread during the run
        # they would hold the GIL for ~15 ms while participants are being scheduled.
        await asyncio.to_thread(warm_up)
        self._main_loop = asyncio.get_running_loop()
        # Probes offer the run's media address (loopback by default), as the light tier does; in an
        # impaired namespace, each probe its own address on the namespace's end of the pair.
        self._patches.enter_context(host_addresses(self.run.config.media_bind_ip))
        logging.getLogger("aiortc.rtcrtpreceiver").addFilter(self.decode_errors)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name=LOOP_THREAD_NAME, daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)
        self._started_at = time.perf_counter()

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        if self.network is not None:
            try:  # before any socket: every socket this thread opens then lives in the probes' namespace
                self.network.enter_namespace()
            except Exception as exc:
                ready.set_exception(exc)
                return
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        executor = concurrent.futures.ThreadPoolExecutor(CODEC_WORKERS, thread_name_prefix=EXECUTOR_PREFIX)
        loop.set_default_executor(executor)  # aiortc encodes in run_in_executor(None, ...)
        self._loop = loop
        loop.call_soon(self._on_loop_started, ready)
        try:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def _on_loop_started(self, ready: concurrent.futures.Future[None]) -> None:
        self._tick(time.perf_counter(), 0)
        ready.set_result(None)

    def _tick(self, expected: float, count: int) -> None:
        """Every `LAG_INTERVAL_S` on the probe loop: how late this callback ran, and now and then thread CPU."""
        now = time.perf_counter()
        record_ms(self.loop_lag, max(0.0, now - expected) * 1000)
        if count % CPU_SAMPLE_TICKS == 0:
            self.cpu.sample(is_probe_thread)
        assert self._loop is not None
        self._sampler = self._loop.call_later(LAG_INTERVAL_S, self._tick, now + LAG_INTERVAL_S, count + 1)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Runs ``fn(*args)`` on the probe loop (from the main loop)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Runs ``fn(*args)`` on the main loop (from the probe loop)."""
        if self._main_loop is not None and not self._main_loop.is_closed():
            self._main_loop.call_soon_threadsafe(fn, *args)

    # -- end of run ------------------------------------------------------------------------------------

    async def collect(self) -> ProbeTotals:
        """Final figures of every probe (call before participants stop); merges e2e latency into the phases."""
        loop = self._loop
        totals = ProbeTotals(probes=self.count)
        if loop is None:
            return totals
        # What each probe's session says is still published and unmuted (a muted track's frames stop without a
        # freeze), read here on the main loop that writes it.
        published = [
            frozenset(p.driver.session.live_remote_tracks() - p.driver.session.muted_remote_tracks)
            if p.driver.session is not None
            else frozenset()
            for p in self.participants
        ]
        collecting = self._collect_on_loop(published, time.perf_counter())
        totals = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(collecting, loop))
        totals.wall_s = time.perf_counter() - self._started_at
        totals.failures = list(self.failures)
        listed = {row["identity"] for row in totals.failures}
        for participant in self.participants:  # those that failed before their media (a refused join, say) too
            driver = participant.driver
            if driver.outcome is not None and driver.outcome.is_failed and driver.identity not in listed:
                totals.failures.append(
                    {"identity": driver.identity, "reason": driver.outcome.reason, "detail": driver.outcome_detail}
                )
        totals.decode_errors = self.decode_errors.count
        if self.network is not None:
            totals.network = await asyncio.to_thread(self.network.stats)
        totals.started = len(self.participants)
        for participant in self.participants:
            totals.add_outcome(participant.driver.identity, participant.driver.outcome, participant.active)
        self.run.metrics.add_histogram("media_e2e", totals.e2e_ms)
        self.totals = totals
        return totals

    async def _collect_on_loop(self, published: list[frozenset[str]], now: float) -> ProbeTotals:
        """Runs on the probe loop, where the figures are written, so the snapshot is consistent."""
        self.cpu.sample(is_probe_thread)
        totals = ProbeTotals(probes=self.count)
        for participant, tracks in zip(self.participants, published, strict=True):
            driver = participant.driver
            await collect_peer(totals, driver.identity, driver.room, participant.measured_peer, tracks, now)
        totals.cpu_s = self.cpu.total_s()
        totals.loop_cpu_s = self.cpu.total_s(lambda name: name == LOOP_THREAD_NAME)
        totals.loop_lag_ms.add(self.loop_lag)
        return totals

    async def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            shutdown = asyncio.run_coroutine_threadsafe(self._shutdown_on_loop(), loop)
            with contextlib.suppress(TimeoutError):  # stop the loop anyway; its daemon thread cannot hold us
                await asyncio.wait_for(asyncio.wrap_future(shutdown), SHUTDOWN_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, SHUTDOWN_TIMEOUT_S)
        self._loop = self._thread = None
        self._patches.close()
        logging.getLogger("aiortc.rtcrtpreceiver").removeFilter(self.decode_errors)

    async def _shutdown_on_loop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        peers = [p.peer for p in self.participants if p.peer is not None]
        await asyncio.gather(*(peer.close() for peer in peers), return_exceptions=True)
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


class ProbeLeg(SignalingLeg):
    """The probe half of one participant on the main loop: signaling glue to its `ProbePeer` (a `MediaLeg`)."""

    __slots__ = ("_closed_peer", "_join_generation", "peer", "slot", "tier")

    def __init__(self, tier: ProbeTier, driver: ParticipantHost, slot: int) -> None:
        cids = {f"{driver.identity}-probe-mic": "audio", f"{driver.identity}-probe-cam": "video"}
        super().__init__(tier.run, driver, tier, cids)
        self.tier = tier
        self.slot = slot  # the publisher slot drawn into this probe's video frames
        self._join_generation = 0  # bumps per join; events of a peer that a fresh join replaced are ignored
        self.peer: ProbePeer | None = None
        # The peer a fresh join closed before its new one exists: the end of the run reads its figures then.
        self._closed_peer: ProbePeer | None = None

    @property
    def measured_peer(self) -> ProbePeer | None:
        """The peer whose figures count at the end: the current one, or the one a fresh join has just closed."""
        return self.peer if self.peer is not None else self._closed_peer

    def on_joined(self, now: float) -> None:
        """Creates the aiortc side; the tracks are announced once the primary PeerConnection connects."""
        from lkswarm.probe.peer import ProbePeer

        tier = self.tier
        if self.peer is not None:  # a fresh join after leave(RECONNECT): start over
            tier.call(self.peer.close_soon)
        self._start_join_over()
        self._join_generation += 1
        generation = self._join_generation
        self._closed_peer = None  # the new peer's figures are the ones read (an old peer's are lost: see README)
        network = tier.network
        self.peer = ProbePeer(
            self.slot,
            tier.registry,
            lambda event: tier.post(self.on_peer_event, generation, event),
            self.run.config.media_connect_timeout_s,
            bind_ip=network.probe_ips[self.slot] if network is not None else None,
            video_codec=self.run.config.video_codec,
        )

    def _has_peer(self) -> bool:
        return self.peer is not None

    def _submit(self, op: ProbeOp, *args: Any) -> None:
        peer = self.peer
        if peer is not None:
            self.tier.call(peer.submit, op, *args)

    def _track_request(self, cid: str, kind: str) -> dict[str, Any]:
        """The probe's two tracks, published as an SDK's app does once ``connect`` has returned.

        The SDKs return from ``connect`` only when the primary PeerConnection is up, so a real client's
        video never competes with its own DTLS handshake for a slow uplink; neither does a probe's.
        """
        from lkswarm.probe.capture import VIDEO_BITRATE_BPS, VIDEO_HEIGHT, VIDEO_WIDTH

        if kind == "audio":
            return add_audio_track(cid, "probe-audio")
        layer = VideoLayer(2, VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_BITRATE_BPS)
        return add_video_track(cid, "probe-video", self.run.config.video_codec, [layer])

    def _answer_offer(self, sdp: str, offer_id: int) -> None:
        self._submit(ProbeOp.ANSWER_OFFER, sdp, offer_id)

    def _accept_answer(self, sdp: str, mid_to_track_id: dict[str, str]) -> None:
        self._submit(ProbeOp.ACCEPT_ANSWER, sdp)

    def _add_candidate(self, target: int, candidate: str) -> None:
        self._submit(ProbeOp.ADD_CANDIDATE, target, candidate)

    def _on_track_published(self, event: TrackPublished) -> None:
        self.tier.call(self.tier.registry.slot_of_track.__setitem__, event.track_sid, self.slot)

    def _publish(self, now: float) -> None:
        audio = next(cid for cid, kind in self._cids.items() if kind == "audio")
        video = next(cid for cid, kind in self._cids.items() if kind == "video")
        self._submit(ProbeOp.PUBLISH, audio, video)

    def _on_remote_track(self, event: RemoteTrackPublished) -> None:
        """Asks for the lowest layer of light-tier video: decoding 720p of every publisher is not the point."""
        if event.track_type != TrackType.VIDEO or self.driver.session is None:
            return
        if event.participant_identity in self.tier.identities:
            return  # another probe: its single 320x180 layer is what we measure
        self.session.send_request(track_setting(event.track_sid, quality="LOW"))

    def on_peer_event(self, generation: int, event: PeerEvent) -> None:
        """An event of this probe's `ProbePeer` of join ``generation``, now on the main loop."""
        driver = self.driver
        if driver.outcome or driver.session is None or generation != self._join_generation:
            return  # ended, or the peer a fresh join replaced (it closes on the probe loop, a moment later)
        if isinstance(event, PeerAnswered):
            driver.media_output(lambda: self.send_answer(event.sdp, event.offer_id))
        elif isinstance(event, PeerOffered):
            driver.media_output(lambda: self.send_offer(event.sdp, event.at))
        elif isinstance(event, PeerConnected):
            self.connected(event.target == SignalTarget.SUBSCRIBER, event.at)
        elif isinstance(event, PeerFailed):
            self.tier.failures.append({"identity": driver.identity, "reason": event.reason, "detail": event.detail})
            self.failed(event.reason, event.detail)

    def on_resumed(self, now: float, last_message_seq: int) -> bool:
        """aiortc 1.16 cannot restart ICE (it answers the server's restart offer with its old credentials), so a
        probe's media counts as back when the signal is; see the README's known limitations."""
        return False

    def _close_peer(self) -> None:
        self.close()
        if self.peer is not None:  # a second abandon (the fresh join's attempt failed) keeps the first's peer
            self._closed_peer, self.peer = self.peer, None
        self._join_generation += 1  # what the closed peer still posts is ignored

    def close(self) -> None:
        peer = self.peer
        if peer is not None:
            self.tier.call(peer.close_soon)
