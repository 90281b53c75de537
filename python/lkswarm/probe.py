"""The probe tier: a sampled subset of participants on aiortc, with real encode and decode, on its own thread.

Theory of operation
-------------------
`probe_seats` picks which seats of which rooms are probes (see its
docstring); whoever the plan puts in such a seat is a probe. Its driver gets
a `ProbeParticipant` instead of the light tier's `MediaParticipant`; it speaks the same signaling through the
same `SignalSession`, but its PeerConnections are aiortc's, and it publishes
VP8 + Opus with frame identity (``lkswarm.probe_media``) and decodes what it
subscribes to.

Threads: aiortc does its RTP, RTCP, SRTP and jitter-buffer work in Python, so
it runs on a dedicated event loop in the ``lkswarm-probe-loop`` thread and
never on the generator's loop, where it would show up as signaling latency.
aiortc decodes on its own threads (``video-decoder``, ``audio-decoder``) and
encodes on the probe loop's executor (``lkswarm-probe-codec-*``). Signaling
crosses between the loops in both directions with ``call_soon_threadsafe``::

    main loop                                       probe loop
    session events ── submit(op) ─────────────────> ProbePeer op queue
    ProbeParticipant.on_peer_event <── post(event) ── "answer" / "offer" / "connected" / "failed"
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lkswarm.barcode import MAX_SLOTS
from lkswarm.config import RunConfig
from lkswarm.errors import ConfigError, MediaError
from lkswarm.events import AnswerReceived, OfferReceived, RemoteTrackPublished, TrackPublished, TrickleReceived
from lkswarm.metrics import new_histogram, record_ms
from lkswarm.probe_report import ProbeTotals, collect_peer
from lkswarm.protocol import TrackSource, TrackType

if TYPE_CHECKING:
    from lkswarm.engine import Engine
    from lkswarm.participant import ParticipantDriver
    from lkswarm.probe_peer import ProbePeer

LOOP_THREAD_NAME = "lkswarm-probe-loop"
EXECUTOR_PREFIX = "lkswarm-probe-codec"
DECODER_THREAD_NAMES = frozenset({"video-decoder", "audio-decoder"})  # named by aiortc's RTCRtpReceiver
LAG_INTERVAL_S = 0.05  # as the main loop's monitor
CPU_SAMPLE_TICKS = 10  # thread CPU is read every 10 lag ticks (0.5 s)
CODEC_WORKERS = 2
SHUTDOWN_TIMEOUT_S = 10.0
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def probe_count(config: RunConfig) -> int:
    """How many participants are probes: ``probes``, or ``probe_fraction`` of all (at least one if > 0)."""
    if config.probes and config.probe_fraction:
        raise ConfigError("give either --probes or --probe-fraction, not both")
    total = config.total_participants
    count = config.probes or (max(1, round(config.probe_fraction * total)) if config.probe_fraction else 0)
    if count > total:
        raise ConfigError(f"{count} probes but only {total} participants (probes are a subset of them)")
    if count > MAX_SLOTS:
        raise ConfigError(f"at most {MAX_SLOTS} probes per process (each one decodes real media)")
    return count


def probe_seats(config: RunConfig) -> dict[tuple[int, int], int]:
    """Which (room index, seat) pairs are probes, and the publisher slot of each.

    Probe ``k`` goes to room ``k % rooms``; within a room the probes' seats are spaced evenly
    over the room's seats, skipping the first ones (the light-tier publishers) when there is room
    to. A seat, not a person, is a probe: with churn, a probe's replacement is a probe too.
    Two or more probes in a room measure each other end to end.
    """
    count = probe_count(config)
    rooms = config.rooms
    peak = max((stage.target for stage in config.stages), default=config.total_participants)
    per_room = max(1, -(-peak // rooms))
    publishers = min(per_room, config.audio_publishers + config.video_publishers)
    seats: dict[tuple[int, int], int] = {}
    for k in range(count):
        room = k % rooms
        in_room = count // rooms + (1 if room < count % rooms else 0)
        rank = k // rooms
        first, span = (publishers, per_room - publishers) if per_room - publishers >= in_room else (0, per_room)
        seats[(room, first + int((rank + 0.5) * span / in_room))] = k
    return seats


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


class ProbeTier:
    """The engine's probe side: the probe loop thread, the probes, CPU accounting and the end-of-run totals."""

    def __init__(self, engine: Engine) -> None:
        try:  # aiortc is imported only when probes run, and here, before the clock starts
            from lkswarm import probe_peer  # noqa: F401
            from lkswarm.probe_media import CaptureRegistry
        except ImportError as exc:
            raise MediaError(f"the probe tier needs aiortc ({exc}); pip install 'aiortc>=1.16'") from None

        self.engine = engine
        seats = {seat: slot for seat, slot in probe_seats(engine.config).items() if engine.owns_room(seat[0])}
        self.count = len(seats)
        # Plan index -> publisher slot of every participant that sits in a probe seat.
        self.slots = {a.index: seats[(a.room_index, a.seat)] for a in engine.plan if (a.room_index, a.seat) in seats}
        self.identities = {engine.config.identity(index) for index in self.slots}
        self.registry = CaptureRegistry()
        self.participants: list[ProbeParticipant] = []
        self.failures: list[dict[str, str]] = []
        self.loop_lag = new_histogram()
        self.cpu = ThreadCpu()
        self.decode_errors = DecodeErrorCounter()
        # Fault-injection seams for tests (main loop): rewrite a server offer, our answer or a trickled
        # candidate (return None from trickle_filter to drop it), as MediaTier has.
        self.offer_filter: Callable[[ProbeParticipant, str], str] | None = None
        self.answer_filter: Callable[[ProbeParticipant, str], str] | None = None
        self.trickle_filter: Callable[[ProbeParticipant, str], str | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sampler: asyncio.TimerHandle | None = None
        self._started_at = 0.0
        self._patches = contextlib.ExitStack()  # aiortc adaptations that last while the tier runs

    def is_probe(self, index: int) -> bool:
        return index in self.slots

    def attach(self, driver: ParticipantDriver) -> ProbeParticipant:
        participant = ProbeParticipant(self, driver, self.slots[driver.index])
        self.participants.append(participant)
        return participant

    # -- the probe loop ------------------------------------------------------------------------------

    async def start(self) -> None:
        from lkswarm.probe_aiortc import host_addresses
        from lkswarm.probe_media import warm_up

        # Render the test pattern and tone before the clock starts: on the probe thread during the run
        # they would hold the GIL for ~15 ms while participants are being scheduled.
        await asyncio.to_thread(warm_up)
        self._main_loop = asyncio.get_running_loop()
        # Probes offer the run's media address (loopback by default), as the light tier does; in an
        # impaired namespace, each probe its own address on the namespace's end of the pair.
        self._patches.enter_context(host_addresses(self.engine.config.media_bind_ip))
        logging.getLogger("aiortc.rtcrtpreceiver").addFilter(self.decode_errors)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name=LOOP_THREAD_NAME, daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)
        self._started_at = time.perf_counter()

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        if self.engine.probe_network is not None:
            try:  # before any socket: every socket this thread opens then lives in the probes' namespace
                self.engine.probe_network.enter_namespace()
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
        totals = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._collect_on_loop(), loop))
        totals.wall_s = time.perf_counter() - self._started_at
        totals.failures = list(self.failures)
        totals.decode_errors = self.decode_errors.count
        if self.engine.probe_network is not None:
            totals.network = await asyncio.to_thread(self.engine.probe_network.stats)
        totals.started = len(self.participants)
        for participant in self.participants:
            totals.add_outcome(participant.driver, participant.active)
        self.engine.metrics.add_histogram("media_e2e", totals.e2e_ms)
        return totals

    async def _collect_on_loop(self) -> ProbeTotals:
        """Runs on the probe loop, where the figures are written, so the snapshot is consistent."""
        self.cpu.sample(is_probe_thread)
        totals = ProbeTotals(probes=self.count)
        for participant in self.participants:
            await collect_peer(totals, participant.driver.identity, participant.driver.room, participant.peer)
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


class ProbeParticipant:
    """The probe half of one participant on the main loop: signaling glue to its `ProbePeer`."""

    __slots__ = (
        "_announced",
        "_cids",
        "_join_generation",
        "_offered_at",
        "_published",
        "active",
        "driver",
        "peer",
        "slot",
        "tier",
    )

    def __init__(self, tier: ProbeTier, driver: ParticipantDriver, slot: int) -> None:
        self.tier = tier
        self.driver = driver
        self.slot = slot  # the publisher slot drawn into this probe's video frames
        self.active = False  # the current subscriber PeerConnection is connected
        self._join_generation = 0  # bumps per join; events of a peer that a fresh join replaced are ignored
        self.peer: ProbePeer | None = None
        self._cids = {"audio": f"{driver.identity}-probe-mic", "video": f"{driver.identity}-probe-cam"}
        self._published: set[str] = set()
        self._announced = False  # addTrack sent for this join
        self._offered_at = 0.0

    def on_joined(self) -> None:
        """Creates the aiortc side; the tracks are announced once the primary PeerConnection connects."""
        from lkswarm.probe_peer import ProbePeer

        tier = self.tier
        if self.peer is not None:  # a fresh join after leave(RECONNECT): start over
            tier.call(self.peer.close_soon)
            self._published.clear()
            self.active = False
        self._announced = False
        self._join_generation += 1
        generation = self._join_generation
        network = tier.engine.probe_network
        self.peer = ProbePeer(
            self.slot,
            tier.registry,
            lambda at, kind, a, b: tier.post(self.on_peer_event, generation, at, kind, a, b),
            tier.engine.config.media_connect_timeout_s,
            bind_ip=network.probe_ips[self.slot] if network is not None else None,
            video_codec=tier.engine.config.video_codec,
        )

    def _announce_tracks(self) -> None:
        """Publishes the probe's two tracks, as an SDK's app does once ``connect`` has returned.

        The SDKs return from ``connect`` only when the primary PeerConnection is up, so a real client's
        video never competes with its own DTLS handshake for a slow uplink; neither does a probe's.
        """
        from lkswarm.probe_media import VIDEO_BITRATE_BPS, VIDEO_HEIGHT, VIDEO_WIDTH

        self._announced = True
        session = self.driver.session
        assert session is not None
        audio = {"cid": self._cids["audio"], "name": "probe-audio", "type": TrackType.AUDIO.name}
        audio.update(source=TrackSource.MICROPHONE.name)
        session.send_request({"addTrack": {**audio, "disableRed": True}})
        layer = {"quality": 2, "width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "bitrate": VIDEO_BITRATE_BPS}
        video = {"cid": self._cids["video"], "name": "probe-video", "type": TrackType.VIDEO.name}
        video.update(source=TrackSource.CAMERA.name)
        session.send_request(
            {
                "addTrack": {
                    **video,
                    "width": VIDEO_WIDTH,
                    "height": VIDEO_HEIGHT,
                    "layers": [layer],
                    "simulcastCodecs": [
                        {"codec": self.tier.engine.config.video_codec, "cid": self._cids["video"], "layers": [layer]}
                    ],
                }
            }
        )

    def on_session_event(self, event: object) -> None:
        peer = self.peer
        if peer is None:
            return
        tier = self.tier
        if isinstance(event, OfferReceived):
            sdp = tier.offer_filter(self, event.sdp) if tier.offer_filter is not None else event.sdp
            tier.call(peer.submit, "answer_offer", sdp, event.id)
        elif isinstance(event, AnswerReceived):
            if self._offered_at:
                tier.engine.metrics.record("offer_answer", (time.perf_counter() - self._offered_at) * 1000)
                self._offered_at = 0.0
            tier.call(peer.submit, "accept_answer", event.sdp)
        elif isinstance(event, TrickleReceived):
            candidate: str | None = event.candidate_init
            if tier.trickle_filter is not None:
                candidate = tier.trickle_filter(self, event.candidate_init)
            if candidate is not None:
                tier.call(peer.submit, "add_candidate", event.target, candidate)
        elif isinstance(event, TrackPublished):
            if event.cid in self._cids.values():
                self._published.add(event.cid)
                tier.call(tier.registry.slot_of_track.__setitem__, event.track_sid, self.slot)
                if len(self._published) == len(self._cids):
                    tier.call(peer.submit, "publish", self._cids["audio"], self._cids["video"])
        elif isinstance(event, RemoteTrackPublished):
            self._limit_synthetic_video(event)

    def _limit_synthetic_video(self, event: RemoteTrackPublished) -> None:
        """Asks for the lowest layer of light-tier video: decoding 720p of every publisher is not the point."""
        session = self.driver.session
        if session is None or event.track_type != TrackType.VIDEO:
            return
        if event.participant_identity in self.tier.identities:
            return  # another probe: its single 320x180 layer is what we measure
        session.send_request({"trackSetting": {"trackSids": [event.track_sid], "quality": "LOW"}})

    def on_peer_event(self, generation: int, at: float, kind: str, a: str, b: str) -> None:
        """An event of this probe's `ProbePeer` of join ``generation``, now on the main loop."""
        driver = self.driver
        session = driver.session
        if driver.outcome or session is None or generation != self._join_generation:
            return  # ended, or the peer a fresh join replaced (it closes on the probe loop, a moment later)
        if kind == "answer":
            answer = self.tier.answer_filter(self, a) if self.tier.answer_filter is not None else a
            driver.media_output(lambda: session.send_answer(answer, int(b)))
        elif kind == "offer":
            self._offered_at = time.perf_counter()
            driver.media_output(lambda: session.send_offer(a, 1))
        elif kind == "connected" and a == "subscriber":
            self.active = True
            if not self._announced:
                driver.media_output(self._announce_tracks)
            driver.media_connected(at)
        elif kind == "failed":
            self.tier.failures.append({"identity": driver.identity, "reason": a, "detail": b})
            driver.finish(f"failed:{a}", b)

    def close(self) -> None:
        peer = self.peer
        if peer is not None:
            self.tier.call(peer.close_soon)
