"""The light media tier from Python's side: one `MediaHub` per engine, one `MediaParticipant` per driver.

Theory of operation
-------------------
The Rust `MediaHub` (``rust/src/media/hub.rs``) owns every PeerConnection,
its UDP socket and all packet work, on its own thread. Python only carries
signaling: it hands the server's SDP and candidates to the hub and sends the
hub's SDP back through the participant's `SignalSession`.

Per participant (`MediaParticipant`)::

    Joined ──> add_peer (subscriber PC, socket bound)
    OfferReceived ──> accept_offer ──> send_answer       (subscriber PC, repeated on re-offers)
    TrickleReceived ──> add_candidate (queued until that PC has its remote description)
    hub "connected subscriber" ──> ACTIVE (latency_ms.active)
      │         publishers: AddTrackRequest per track ──> TrackPublished (all) ──> publisher offer
    AnswerReceived ──> accept_answer                     (publisher PC)
    hub "first_packet" ──> latency_ms.track_subscribed (from the track's appearance in an update)
    hub "failed" ──> the participant fails with the hub's reason

Tracks are announced once the subscriber (primary) PeerConnection is
connected, as an SDK's app publishes after ``connect`` returns. A fresh join
(the server's leave with action RECONNECT) starts the participant's media
over: its old peer is removed from the hub and every per-join state is reset;
ACTIVE is counted once per participant, but ``active`` says whether the
current PeerConnection is connected.

`MediaTier` polls the hub's events every `EVENT_POLL_S` on the loop. Event
times are stamped by the hub when they happen, so the poll interval delays
reactions but not the measured latencies.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lkswarm import _core
from lkswarm.clips import LAYERS, MediaClips, load_clips
from lkswarm.errors import MediaError
from lkswarm.events import AnswerReceived, OfferReceived, RemoteTrackPublished, TrackPublished, TrickleReceived
from lkswarm.metrics import new_histogram, record_buckets_us, record_ms, summarize
from lkswarm.protocol import TrackSource, TrackType

if TYPE_CHECKING:
    from lkswarm.engine import Engine
    from lkswarm.participant import ParticipantDriver

EVENT_POLL_S = 0.02
TARGET_PUBLISHER = 0
TARGET_SUBSCRIBER = 1
# Layout tiles: (VideoQuality, width, height) the subscriber asks the SFU for.
TILE_SIZES = {"main": ("HIGH", 1280, 720), "grid": ("MEDIUM", 640, 360), "thumb": ("LOW", 320, 180)}
MISSING_EXAMPLES = 5  # (subscriber, track) pairs with no packets named in the report
TRACK_CSV_FIELDS = (
    "identity", "room", "track_id", "kind", "codec", "packets", "bytes", "bitrate_bps", "expected", "lost", "jitter_ms",
)  # fmt: skip
CSV_ROUNDING = (("bitrate_bps", None), ("jitter_ms", 3))


@dataclass(slots=True)
class MediaTotals:
    """Media figures of the whole run, gathered from every peer at the end."""

    packets_received: int = 0
    bytes_received: int = 0
    packets_expected: int = 0
    packets_lost: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    frames_sent: int = 0
    frames_skipped: int = 0  # publishers' frames dropped because the media thread fell behind
    foreign_datagrams: int = 0
    keyframe_requests: int = 0
    tracks_received: int = 0
    tracks_missing: int = 0
    tracks_by_codec: dict[str, int] = field(default_factory=dict)  # received tracks per mime type
    jitter_ms: Any = field(default_factory=new_histogram)
    # latency_ms.track_subscribed split by the track's kind: a video track waits for a keyframe, whose
    # requests the server throttles (README, "Things the server does"), so the two have different modes.
    track_subscribed_ms: dict[str, Any] = field(default_factory=dict)
    track_rows: list[dict[str, Any]] = field(default_factory=list)
    missing_examples: list[dict[str, str]] = field(default_factory=list)  # the first few, to act on
    hub_wakeups: int = 0  # media thread loop iterations and peer timeouts served (where its CPU goes)
    hub_timeouts: int = 0
    # How late the media thread served its deadlines (µs values); reported under generator.media_lag_ms.
    timer_lag: Any = field(default_factory=new_histogram)

    def report(self) -> dict[str, Any]:
        expected = self.packets_expected
        return {
            "packets_sent": self.datagrams_sent,
            "bytes_sent": self.bytes_sent,
            "frames_sent": self.frames_sent,
            "frames_skipped": self.frames_skipped,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "packets_expected": expected,
            "packets_lost": self.packets_lost,
            "loss_ratio": round(self.packets_lost / expected, 6) if expected else 0.0,
            "jitter_ms": summarize(self.jitter_ms),
            "track_subscribed_ms": {kind: summarize(h) for kind, h in sorted(self.track_subscribed_ms.items())},
            "tracks_received": self.tracks_received,
            "tracks_missing": self.tracks_missing,
            "tracks_by_codec": dict(sorted(self.tracks_by_codec.items())),
            "missing_examples": self.missing_examples,
            "foreign_datagrams": self.foreign_datagrams,
            "keyframe_requests": self.keyframe_requests,
            "hub": {"wakeups": self.hub_wakeups, "timeouts": self.hub_timeouts},
        }

    def warnings(self) -> list[str]:
        out: list[str] = []
        if self.tracks_missing:
            examples = ", ".join(
                f"{row['subscriber']} had nothing of {row['publisher']}'s {row['track_sid']}"
                for row in self.missing_examples
            )
            out.append(
                f"{self.tracks_missing} (subscriber, track) pair(s) received no packets although the track was "
                f"published at the end, e.g. {examples}; see media.missing_examples"
            )
        if self.frames_skipped:
            share = self.frames_skipped / max(1, self.frames_skipped + self.frames_sent)
            out.append(
                f"publishers skipped {self.frames_skipped} frame(s) ({share:.2%} of those due) because this "
                "generator's media thread fell more than 100 ms behind: the server was offered less media than "
                "planned. Spread the load over more generator processes."
            )
        return out


def publisher_role(seat: int, audio_publishers: int, video_publishers: int) -> tuple[bool, bool]:
    """(publishes audio, publishes video) of the participant in ``seat`` of its room.

    As in ``lk perf load-test``, the first participants of each room publish video,
    the next ones audio; nobody publishes both.
    """
    if seat < video_publishers:
        return False, True
    if seat < video_publishers + audio_publishers:
        return True, False
    return False, False


class MediaTier:
    """The engine's media side: the hub, the event pump and the end-of-run totals."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hub: _core.MediaHub | None = None
        self.participants: dict[int, MediaParticipant] = {}
        self.clips: MediaClips | None = None
        self._clock_offset_s = 0.0
        self._pump: asyncio.Task[None] | None = None
        self.track_subscribed_ms: dict[str, Any] = {}  # kind -> HdrHistogram (see MediaTotals)
        # Fault-injection seams for tests: rewrite a server offer, our answer or a trickled candidate
        # (return None from trickle_filter to drop the candidate).
        self.offer_filter: Callable[[MediaParticipant, str], str] | None = None
        self.answer_filter: Callable[[MediaParticipant, str], str] | None = None
        self.trickle_filter: Callable[[MediaParticipant, str], str | None] | None = None

    async def start(self) -> None:
        config = self.engine.config
        needs_clips = config.audio_publishers > 0 or config.video_publishers > 0
        clips = await asyncio.to_thread(load_clips, config.video_codec) if needs_clips else None
        self.clips = clips
        hub = _core.MediaHub(config.media_bind_ip)
        if clips is not None:
            layers = clips.video_layers if config.simulcast else clips.video_layers[-1:]
            hub.set_library(clips.audio, layers, video_codec=clips.video_codec)
        self._clock_offset_s = time.perf_counter() - hub.now_s()
        self.hub = hub
        self._pump = asyncio.get_running_loop().create_task(self._pump_events())

    def attach(self, driver: ParticipantDriver) -> MediaParticipant:
        return MediaParticipant(self, driver)

    async def _pump_events(self) -> None:
        while self.hub is not None:
            await asyncio.sleep(EVENT_POLL_S)
            self.dispatch()

    def dispatch(self) -> None:
        hub = self.hub
        if hub is None:
            return
        for peer, at_s, kind, a, b in hub.take_events():
            participant = self.participants.get(peer)
            if participant is not None:
                participant.on_hub_event(at_s + self._clock_offset_s, kind, a, b)

    def collect(self) -> MediaTotals:
        """Final figures of every live peer (call before participants stop)."""
        self.dispatch()
        totals = MediaTotals()
        hub = self.hub
        if hub is None:
            return totals
        for participant in self.participants.values():
            stats = hub.peer_stats(participant.peer_id) if participant.peer_id is not None else None
            if stats is not None:
                participant.account(stats, totals)
        totals.track_subscribed_ms = self.track_subscribed_ms
        running = hub.totals()
        totals.hub_wakeups, totals.hub_timeouts = running["wakeups"], running["timeouts"]
        record_buckets_us(totals.timer_lag, hub.timer_lag())
        return totals

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self.hub is not None:
            hub, self.hub = self.hub, None
            await asyncio.to_thread(hub.close)


class MediaParticipant:
    """The media half of one participant: its peer in the hub and the signaling glue."""

    __slots__ = (
        "_announced",
        "_cids",
        "_has_remote",
        "_offered",
        "_offered_at",
        "_pending_candidates",
        "_published",
        "_remote_published_at",
        "_video_tiles",
        "active",
        "driver",
        "local_port",
        "peer_id",
        "publishes_audio",
        "publishes_video",
        "tier",
    )

    def __init__(self, tier: MediaTier, driver: ParticipantDriver) -> None:
        config = tier.engine.config
        self.tier = tier
        self.driver = driver
        self.peer_id: int | None = None
        self.local_port = 0  # UDP port of the subscriber PeerConnection
        self.active = False  # the current subscriber PeerConnection is connected
        self.publishes_audio, self.publishes_video = publisher_role(
            driver.seat, config.audio_publishers, config.video_publishers
        )
        self._reset_join_state()

    def _reset_join_state(self) -> None:
        """What belongs to one join: a fresh join (leave RECONNECT) starts all of it over."""
        self._cids: dict[str, str] = {}  # cid -> "audio" | "video"
        self._published: set[str] = set()
        self._announced = False
        self._offered = False
        self._offered_at = 0.0
        self._has_remote = {TARGET_PUBLISHER: False, TARGET_SUBSCRIBER: False}
        self._pending_candidates: dict[int, list[str]] = collections.defaultdict(list)
        self._remote_published_at: dict[str, float] = {}
        self._video_tiles: list[str] = []  # remote video tracks in order of appearance (the layout)

    # -- signaling side ------------------------------------------------------------------

    def on_joined(self) -> None:
        """Creates the peer (its subscriber PeerConnection); tracks are announced once that is connected."""
        hub = self.tier.hub
        assert hub is not None
        if self.peer_id is not None:  # a fresh join: the server forgot the old PeerConnections, so does the hub
            self.close()
            self.active = False
            self._reset_join_state()
        config = self.tier.engine.config
        seed = (config.seed or 0) * 1_000_003 + self.driver.index
        self.peer_id, self.local_port = hub.add_peer(
            seed=seed, talk_spurts=config.talk_spurts, connect_timeout_s=config.media_connect_timeout_s
        )
        self.tier.participants[self.peer_id] = self

    def _announce_tracks(self) -> None:
        """Sends an AddTrackRequest per published track (the publisher offer follows their TrackPublished)."""
        self._announced = True
        session = self.driver.session
        assert session is not None
        identity = self.driver.identity
        if self.publishes_audio:
            cid = f"{identity}-mic"
            self._cids[cid] = "audio"
            session.send_request(
                {
                    "addTrack": {
                        "cid": cid,
                        "name": "synthetic-audio",
                        "type": TrackType.AUDIO.name,
                        "source": TrackSource.MICROPHONE.name,
                        "disableRed": True,
                    }
                }
            )
        if self.publishes_video:
            cid = f"{identity}-cam"
            self._cids[cid] = "video"
            session.send_request({"addTrack": self._video_track_request(cid)})

    def _video_track_request(self, cid: str) -> dict[str, Any]:
        config = self.tier.engine.config
        layers = LAYERS if config.simulcast else LAYERS[-1:]
        layer_list = [
            {"quality": layer.quality, "width": layer.width, "height": layer.height, "bitrate": layer.bitrate_bps}
            for layer in layers
        ]
        top = layers[-1]
        return {
            "cid": cid,
            "name": "synthetic-video",
            "type": TrackType.VIDEO.name,
            "source": TrackSource.CAMERA.name,
            "width": top.width,
            "height": top.height,
            "layers": layer_list,
            "simulcastCodecs": [{"codec": config.video_codec, "cid": cid, "layers": layer_list}],
        }

    def on_session_event(self, event: object) -> None:
        """Handles the media-related session events; raises MediaError on refusal."""
        hub = self.tier.hub
        if hub is None or self.peer_id is None:
            return
        session = self.driver.session
        assert session is not None
        tier = self.tier
        if isinstance(event, OfferReceived):
            sdp = tier.offer_filter(self, event.sdp) if tier.offer_filter is not None else event.sdp
            answer = hub.accept_offer(self.peer_id, sdp)
            if tier.answer_filter is not None:
                answer = tier.answer_filter(self, answer)
            session.send_answer(answer, event.id)
            self._remote_ready(TARGET_SUBSCRIBER)
        elif isinstance(event, AnswerReceived):
            if self._offered_at:
                self.tier.engine.metrics.record("offer_answer", (time.perf_counter() - self._offered_at) * 1000)
                self._offered_at = 0.0
            hub.accept_answer(self.peer_id, event.sdp)
            self._remote_ready(TARGET_PUBLISHER)
        elif isinstance(event, TrickleReceived):
            candidate: str | None = event.candidate_init
            if tier.trickle_filter is not None:
                candidate = tier.trickle_filter(self, event.candidate_init)
            if candidate is None:
                return
            if self._has_remote.get(event.target, False):
                hub.add_candidate(self.peer_id, event.target, candidate)
            else:
                self._pending_candidates[event.target].append(candidate)
        elif isinstance(event, TrackPublished):
            if event.cid in self._cids:
                self._published.add(event.cid)
                self._maybe_offer()
        elif isinstance(event, RemoteTrackPublished):
            self._remote_published_at.setdefault(event.track_sid, event.at)
            if event.track_type == TrackType.VIDEO and self.tier.engine.config.layout:
                self._place_video_tile(event.track_sid)

    def _place_video_tile(self, track_sid: str) -> None:
        """Applies the layout to a new remote video track: its size, or disabled when it has no tile."""
        if track_sid in self._video_tiles:
            return
        config = self.tier.engine.config
        tile = len(self._video_tiles)
        self._video_tiles.append(track_sid)
        setting: dict[str, Any] = {"trackSids": [track_sid]}
        tiles = config.grid_tiles
        if tiles and tile >= tiles:
            setting["disabled"] = True
        else:
            main = tile == 0 and (tiles == 1 or not tiles)  # the speaker view's big tile
            quality, width, height = TILE_SIZES["main" if main else "grid" if 1 < tiles <= 4 else "thumb"]
            setting.update(quality=quality, width=width, height=height)
        session = self.driver.session
        assert session is not None
        session.send_request({"trackSetting": setting})
        self.tier.engine.counters["track_settings"] += 1

    def _remote_ready(self, target: int) -> None:
        hub = self.tier.hub
        assert hub is not None and self.peer_id is not None
        self._has_remote[target] = True
        for candidate in self._pending_candidates.pop(target, []):
            hub.add_candidate(self.peer_id, target, candidate)

    def _maybe_offer(self) -> None:
        """Sends the publisher offer once every announced track is acknowledged (as the SDKs do)."""
        if self._offered or self._published != set(self._cids):
            return
        hub = self.tier.hub
        session = self.driver.session
        assert hub is not None and session is not None and self.peer_id is not None
        audio = next((cid for cid, kind in self._cids.items() if kind == "audio"), None)
        video = next((cid for cid, kind in self._cids.items() if kind == "video"), None)
        offer = hub.publisher_offer(self.peer_id, audio_cid=audio, video_cid=video)
        self._offered = True
        self._offered_at = time.perf_counter()
        session.send_offer(offer, 1)

    # -- hub side ---------------------------------------------------------------------------

    def on_hub_event(self, at: float, kind: str, a: str, b: str) -> None:
        driver = self.driver
        engine = self.tier.engine
        if driver.outcome:
            return
        if kind == "connected" and a == "subscriber":
            self.active = True
            if not self._announced and (self.publishes_audio or self.publishes_video):
                driver.media_output(self._announce_tracks)
            driver.media_connected(at)
        elif kind == "first_packet":
            published_at = self._remote_published_at.get(a)
            if published_at is not None:
                value_ms = max(0.0, at - published_at) * 1000
                engine.metrics.record("track_subscribed", value_ms)
                histogram = self.tier.track_subscribed_ms.get(b)  # b: the track's kind
                if histogram is None:
                    histogram = self.tier.track_subscribed_ms[b] = new_histogram()
                record_ms(histogram, value_ms)
        elif kind == "failed":
            driver.finish(f"failed:{a}", b)

    def account(self, stats: dict[str, Any], totals: MediaTotals) -> None:
        totals.datagrams_sent += stats["datagrams_sent"]
        totals.bytes_sent += stats["bytes_sent"]
        totals.frames_sent += stats["frames_sent"]
        totals.frames_skipped += stats["frames_skipped"]
        totals.foreign_datagrams += stats["foreign_datagrams"]
        totals.keyframe_requests += stats["keyframe_requests"]
        received: dict[str, str] = {}  # track id -> codec: a track counts once, however many SSRCs
        for track in stats["tracks"]:
            totals.packets_received += track["packets"]
            totals.bytes_received += track["bytes"]
            totals.packets_expected += track["expected"]
            totals.packets_lost += track["lost"]
            if track["packets"] > 0:
                received[track["track_id"]] = track["codec"]
                record_ms(totals.jitter_ms, track["jitter_ms"])
            totals.track_rows.append({"identity": self.driver.identity, "room": self.driver.room, **track})
        totals.tracks_received += len(received)
        for codec in received.values():
            totals.tracks_by_codec[codec] = totals.tracks_by_codec.get(codec, 0) + 1
        session = self.driver.session
        if session is not None and not self.driver.outcome:
            missing = session.live_remote_tracks() - set(received)
            totals.tracks_missing += len(missing)
            for track_sid in sorted(missing)[: max(0, MISSING_EXAMPLES - len(totals.missing_examples))]:
                publisher = next(
                    (i for i, sid in session.others.items() if track_sid in session.tracks_by_participant.get(sid, ())),
                    "?",
                )
                totals.missing_examples.append(
                    {
                        "subscriber": self.driver.identity,
                        "room": self.driver.room,
                        "publisher": publisher,
                        "track_sid": track_sid,
                    }
                )

    def close(self) -> None:
        hub = self.tier.hub
        if hub is not None and self.peer_id is not None:
            hub.remove_peer(self.peer_id)
            self.tier.participants.pop(self.peer_id, None)
            self.peer_id = None


def write_track_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-track receive detail: one row per (subscriber, track)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRACK_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            # Whole bits per second and microseconds of jitter: the rest is noise in a spreadsheet.
            rounded = {key: round(row[key], digits) for key, digits in CSV_ROUNDING if isinstance(row.get(key), float)}
            writer.writerow({**row, **rounded})


__all__ = ["MediaError", "MediaParticipant", "MediaTier", "MediaTotals", "publisher_role", "write_track_csv"]
