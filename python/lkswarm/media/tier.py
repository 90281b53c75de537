"""The light media tier from Python's side: one `MediaHub` per run (`LightTier`), one `LightLeg` per participant.

Theory of operation
-------------------
The Rust `MediaHub` (``rust/src/media/hub.rs``) owns every PeerConnection,
its UDP socket and all packet work, on its own thread. Python only carries
signaling: it hands the server's SDP and candidates to the hub and sends the
hub's SDP back through the participant's `SignalSession`.

Per participant (`LightLeg`, on the shared glue of `lkswarm.engine.leg`)::

    Joined ──> add_peer (subscriber PC, socket bound)
    OfferReceived ──> accept_offer ──> send_answer       (subscriber PC, repeated on re-offers)
    TrickleReceived ──> add_candidate (queued until that PC has its remote description)
    hub PcConnected(subscriber) ──> ACTIVE (latency_ms.active)
      │         publishers: AddTrackRequest per track ──> TrackPublished (all) ──> publisher offer
    AnswerReceived ──> accept_answer                     (publisher PC)
    hub FirstPacket ──> latency_ms.track_subscribed (from the track's appearance in an update)
    hub PeerFailed ──> the participant fails with the hub's reason

Tracks are announced once the subscriber (primary) PeerConnection is
connected, as an SDK's app publishes after ``connect`` returns. A fresh join
(the server's leave with action RECONNECT) starts the participant's media
over: its old peer is removed from the hub when the leave arrives
(`abandon_join`, so nothing that peer reports later counts as the new
join's) and every per-join state is reset;
ACTIVE is counted once per participant, but ``active`` says whether the
current PeerConnection is connected.

`LightTier` takes the hub's events when the hub's event descriptor turns
readable (``loop.add_reader``; the hub signals it when its event list stops
being empty), so a steady run with no events never wakes the loop for them.
Event times are stamped by the hub when they happen.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

from hdrh.histogram import HdrHistogram

from lkswarm import _core
from lkswarm.engine.leg import LegFilters, SignalingLeg
from lkswarm.engine.ports import MediaCounts, ParticipantHost, RunContext
from lkswarm.errors import MediaError
from lkswarm.media.clips import LAYERS, MediaClips, load_clips
from lkswarm.media.data import DataTotals, destinations, is_data_publisher, is_slow_reader
from lkswarm.media.data_track import DataTrackRole
from lkswarm.media.totals import MediaTotals
from lkswarm.metrics import MAX_MEDIA_LAG_P99_MS, new_histogram, p99_exceeds, record_buckets_us, record_ms
from lkswarm.signal.enums import SignalTarget, TrackType
from lkswarm.signal.events import (
    DataTrackHandles,
    DataTrackPublished,
    ParticipantsChanged,
    RemoteDataTrackPublished,
    RemoteTrackPublished,
    RequestFailed,
    SessionEvent,
)
from lkswarm.signal.requests import VideoLayer, add_audio_track, add_video_track, track_setting

# Layout tiles: (VideoQuality, width, height) the subscriber asks the SFU for.
TILE_SIZES = {"main": ("HIGH", 1280, 720), "grid": ("MEDIUM", 640, 360), "thumb": ("LOW", 320, 180)}
MISSING_EXAMPLES = 5  # (subscriber, track) pairs with no packets named in the report
# A subscriber that joined this recently before the end is not judged for missing tracks: its subscriptions,
# handshake and first packets take a few seconds (a capacity search's last churn joins end just before it).
MISSING_GRACE_S = 5.0
# tracks.csv and data.csv rows kept of peers closed before the end (departures, a fresh join's old peer): with
# churn they grew for the whole run (~6.7 KB a peer, ~130 MB an hour at 2 replacements a second). Their figures
# always count in the totals; rows past this are counted, not listed. Live peers' rows are all listed.
MAX_CLOSED_PEER_ROWS = 20_000


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


def _data_latency_reads(hub: _core.MediaHub) -> list[tuple[str, Callable[[], list[tuple[int, int]]]]]:
    """Each data phase and how to read its (µs, count) buckets from the media thread, live or at the end."""
    return [
        ("data_e2e", hub.data_latency),
        ("data_e2e_slow_readers", lambda: hub.data_latency(slow_readers=True)),
        ("data_track_e2e", hub.data_track_latency),
    ]


class LightTier(LegFilters["LightLeg"]):
    """The light media tier of a run: the hub, the event pump and the end-of-run totals (a `MediaTier`)."""

    def __init__(self, run: RunContext) -> None:
        super().__init__()
        self.run = run
        self.hub: _core.MediaHub | None = None
        self.participants: dict[int, LightLeg] = {}  # by hub peer id
        self.clips: MediaClips | None = None
        self.totals: MediaTotals | None = None  # set by collect()
        # The figures of peers closed before the end (departures, failures, a fresh join's old peer), accounted as
        # they close so their packets and data count too; collect() adds the live peers to them.
        self.ended = MediaTotals(data=DataTotals(publish_channel=run.config.data_channel))
        self._clock_offset_s = 0.0
        self._events_fd: int | None = None  # registered with the loop's readers while the hub runs
        self._data_latency_live = False  # the run's data phases read the hub's latency until it is settled
        self.track_subscribed_ms: dict[str, HdrHistogram] = {}  # kind -> histogram (see MediaTotals)

    def claims(self, index: int) -> bool:
        return True  # everyone the probe tier did not claim first

    def attach(self, host: ParticipantHost) -> LightLeg:
        return LightLeg(self, host)

    async def start(self) -> None:
        config = self.run.config
        needs_clips = config.audio_publishers > 0 or config.video_publishers > 0
        clips = await asyncio.to_thread(load_clips, config.video_codec) if needs_clips else None
        self.clips = clips
        hub = _core.MediaHub(config.media_bind_ip)
        if clips is not None:
            layers = clips.video_layers if config.simulcast else clips.video_layers[-1:]
            hub.set_library(clips.audio, layers, video_codec=clips.video_codec)
        self._clock_offset_s = time.perf_counter() - hub.now_s()
        self.hub = hub
        if config.data_publishers or config.data_tracks:  # a scrape reads the media thread's latency so far
            for phase, read in _data_latency_reads(hub):
                self.run.metrics.add_live_source(phase, read)
            self._data_latency_live = True
        self._events_fd = hub.events_fd()
        asyncio.get_running_loop().add_reader(self._events_fd, self.dispatch)

    def dispatch(self) -> None:
        hub = self.hub
        if hub is None:
            return
        now = time.perf_counter()
        for event in hub.take_events():
            participant = self.participants.get(event.peer)
            if participant is not None:
                participant.on_hub_event(event, event.at_s + self._clock_offset_s, now)

    def running_counts(self) -> MediaCounts | None:
        if self.hub is None:
            return None
        totals = self.hub.totals()
        return MediaCounts(
            totals["packets_received"],
            totals["packets_expected"],
            totals["packets_lost"],
            totals.get("data_sent", 0),
            totals.get("data_received", 0),
            totals.get("data_track_sent", 0),
            totals.get("data_track_received", 0),
        )

    def saturation(self) -> str:
        """The media thread's lag p99 over its limit: media was sent and stamped late."""
        if self.hub is not None and p99_exceeds(*self.hub.timer_lag_above(MAX_MEDIA_LAG_P99_MS / 1000)):
            return f"media thread lag p99 > {MAX_MEDIA_LAG_P99_MS:.0f} ms: the generator's media tier is saturated"
        return ""

    def record_first_packet(self, kind: str, value_ms: float) -> None:
        self.run.metrics.record("track_subscribed", value_ms)
        histogram = self.track_subscribed_ms.get(kind)
        if histogram is None:
            histogram = self.track_subscribed_ms[kind] = new_histogram()
        record_ms(histogram, value_ms)

    async def collect(self) -> MediaTotals:
        """Final figures: every live peer's (call before participants stop), added to those of the peers closed
        before (`ended`)."""
        self.dispatch()
        totals = self.totals = self.ended
        hub = self.hub
        if hub is None:
            return totals
        for participant in self.participants.values():
            stats = hub.peer_stats(participant.peer_id) if participant.peer_id is not None else None
            if stats is not None:
                participant.account(stats, totals)
        totals.track_subscribed_ms = self.track_subscribed_ms
        # After the peers' figures: messages keep arriving while they are read, so the latency samples
        # are at least as many as the messages counted (a few more, of the last moment).
        self._settle_data_latency(hub)
        running = hub.totals()
        totals.hub_wakeups, totals.hub_timeouts = running["wakeups"], running["timeouts"]
        totals.hub_io, totals.hub_io_fallback = hub.io_backend, hub.io_fallback
        totals.hub_thread_cpu_s = hub.thread_cpu_s
        totals.hub_syscalls, totals.hub_datagrams_received = running["syscalls"], running["datagrams_received"]
        record_buckets_us(totals.timer_lag, hub.timer_lag())
        return totals

    def _settle_data_latency(self, hub: _core.MediaHub) -> None:
        """The data phases' final values: every data message and data-track packet received, by all peers."""
        for phase, read in _data_latency_reads(hub):
            self.run.metrics.settle_live_source(phase, read)
        self._data_latency_live = False

    async def close(self) -> None:
        if self._events_fd is not None:
            asyncio.get_running_loop().remove_reader(self._events_fd)
            self._events_fd = None
        if self.hub is not None:
            hub, self.hub = self.hub, None
            if self._data_latency_live:  # no collect (a failed run): no scrape may read a closed hub
                self._settle_data_latency(hub)
            await asyncio.to_thread(hub.close)


class LightLeg(SignalingLeg):
    """The media half of one participant: its peer in the hub (a `MediaLeg`)."""

    __slots__ = (
        "_data_destinations",
        "_data_waiting",
        "_has_remote",
        "_pending_candidates",
        "_pending_mutes",
        "_remote_published_at",
        "_video_tiles",
        "data_track",
        "local_port",
        "peer_id",
        "publishes_audio",
        "publishes_data",
        "publishes_video",
        "tier",
    )

    def __init__(self, tier: LightTier, driver: ParticipantHost) -> None:
        config = tier.run.config
        audio, video = publisher_role(driver.seat, config.audio_publishers, config.video_publishers)
        cids = {f"{driver.identity}-mic": "audio"} if audio else {}
        if video:
            cids[f"{driver.identity}-cam"] = "video"
        super().__init__(tier.run, driver, tier, cids)
        self.tier = tier
        self.publishes_audio, self.publishes_video = audio, video
        self.publishes_data = is_data_publisher(driver.seat, config.data_publishers)
        self.data_track = DataTrackRole(tier.run, driver.identity, driver.seat)
        self.peer_id: int | None = None
        self.local_port = 0  # UDP port of the subscriber PeerConnection
        self._reset_join_state()

    def _reset_join_state(self) -> None:
        """What belongs to one join besides the shared glue's: candidates, remote tracks, the layout."""
        self._has_remote: dict[int, bool] = {SignalTarget.PUBLISHER: False, SignalTarget.SUBSCRIBER: False}
        self._pending_candidates: dict[int, list[str]] = collections.defaultdict(list)
        # The server's mutes of our tracks that came before the publisher offer made them (video: True/False -> muted):
        # the server mutes a track it has acknowledged, and on two PeerConnections the offer waits for all of ours.
        self._pending_mutes: dict[bool, bool] = {}
        self._remote_published_at: dict[str, float] = {}
        # Live remote video tracks in order of appearance (the layout), each with the setting last asked for.
        self._video_tiles: dict[str, dict[str, Any] | None] = {}
        # ``--data-to N`` with nobody else in the room yet: the data waits for someone to send to, since an
        # empty destination list means everyone to the server. A fresh join's new peer starts its own once
        # connected, so a wait of the old one's must not start it before then.
        self._data_waiting = False
        # ``--data-to N``: the identities this join's data goes to, filled in as the room fills (None: not sending)
        self._data_destinations: list[str] | None = None

    # -- signaling side ------------------------------------------------------------------

    single_pc_capable = True

    def on_joined(self, now: float) -> None:
        """Creates the peer (its subscriber PeerConnection); tracks are announced once that is connected.
        A ``/rtc/v1`` join opened its one PeerConnection before it was sent (`prepare_join`)."""
        if self._take_prepared_join():
            return
        hub = self.tier.hub
        assert hub is not None
        if self.peer_id is not None:  # a fresh join: the server forgot the old PeerConnections, so does the hub
            self.abandon_join()
        self._add_peer(hub, single_pc=False)

    def _add_peer(self, hub: _core.MediaHub, *, single_pc: bool) -> int:
        """Creates this participant's peer in the hub (seeded by run and index) and registers it."""
        config = self.run.config
        seed = ((config.seed or 0) * 1_000_003 + self.driver.index) % 2**64  # the hub's seed is a u64
        self.peer_id, self.local_port = hub.add_peer(
            seed=seed,
            talk_spurts=config.talk_spurts,
            connect_timeout_s=config.media_connect_timeout_s,
            single_pc=single_pc,
            rpc_echo=config.rpc_echo,
        )
        self.tier.participants[self.peer_id] = self
        if is_slow_reader(self.driver.seat, config.participants, config.data_slow_readers):
            # The first pause a period after the peer opens, so its channels are open by then.
            every_s = config.data_slow_every_s
            hub.data_slow_reader(self.peer_id, config.data_slow_pause_s, every_s, every_s)
        return self.peer_id

    def _open_single_pc(self, now: float) -> tuple[str, int]:
        """The ``/rtc/v1`` peer: one PeerConnection that sends our tracks and receives the room's."""
        hub = self.tier.hub
        if hub is None:
            raise MediaError("the media hub is closed")
        self.abandon_join()  # a fresh join: the server forgot any old PeerConnection, so does the hub
        peer = self._add_peer(hub, single_pc=True)
        audio = next((cid for cid, kind in self._cids.items() if kind == "audio"), None)
        video = next((cid for cid, kind in self._cids.items() if kind == "video"), None)
        return hub.join_offer(peer, audio_cid=audio, video_cid=video)

    def _reoffer(self, num_audios: int, num_videos: int) -> tuple[str, int] | None:
        hub, peer = self._hub()
        return hub.reoffer(peer, num_audios, num_videos)

    def _close_peer(self) -> None:
        self.close()
        self._reset_join_state()

    def abandon_join(self) -> None:
        super().abandon_join()
        self.data_track.new_join()

    def _mute_track(self, video: bool, muted: bool) -> bool:
        hub, peer = self.tier.hub, self.peer_id
        if hub is None or peer is None:
            return False
        if not self._offered and not self.single_pc:
            self._pending_mutes[video] = muted  # applied as the publisher offer makes the track (`_publish`)
            return True
        try:
            hub.set_track_muted(peer, video, muted)
        except MediaError:  # the peer has no such track: nothing to stop, and no reason to fail
            return False
        return True

    def _ice_restart(self) -> tuple[str, int]:
        hub, peer = self._hub()
        return hub.ice_restart(peer)

    def _has_peer(self) -> bool:
        return self.tier.hub is not None and self.peer_id is not None

    def _hub(self) -> tuple[_core.MediaHub, int]:
        hub, peer = self.tier.hub, self.peer_id
        if hub is None or peer is None:
            raise MediaError("the media hub is closed")
        return hub, peer

    def _track_request(self, cid: str, kind: str) -> dict[str, Any]:
        if kind == "audio":
            return add_audio_track(cid, "synthetic-audio")
        config = self.run.config
        layers = LAYERS if config.simulcast else LAYERS[-1:]
        video_layers = [VideoLayer(layer.quality, layer.width, layer.height, layer.bitrate_bps) for layer in layers]
        return add_video_track(cid, "synthetic-video", config.video_codec, video_layers)

    def _answer_offer(self, sdp: str, offer_id: int) -> None:
        hub, peer = self._hub()
        self.send_answer(hub.accept_offer(peer, sdp), offer_id)
        self._remote_ready(SignalTarget.SUBSCRIBER)

    def _accept_answer(self, sdp: str, mid_to_track_id: dict[str, str]) -> tuple[str, int] | None:
        hub, peer = self._hub()
        follow_up = hub.accept_answer(peer, sdp, mid_to_track_id or None)
        self._remote_ready(SignalTarget.PUBLISHER)
        return follow_up

    def _add_candidate(self, target: int, candidate: str) -> None:
        if self.single_pc:
            target = SignalTarget.PUBLISHER  # one PeerConnection, which the server calls its publisher
        if self._has_remote.get(target, False):
            hub, peer = self._hub()
            hub.add_candidate(peer, target, candidate)
        else:  # before that PC's remote description: str0m would refuse it
            self._pending_candidates[target].append(candidate)

    def _remote_ready(self, target: int) -> None:
        hub, peer = self._hub()
        self._has_remote[target] = True
        for candidate in self._pending_candidates.pop(target, []):
            hub.add_candidate(peer, target, candidate)

    def _publish(self, now: float) -> None:
        """Sends the publisher offer once every announced track is acknowledged (as the SDKs do)."""
        hub, peer = self._hub()
        audio = next((cid for cid, kind in self._cids.items() if kind == "audio"), None)
        video = next((cid for cid, kind in self._cids.items() if kind == "video"), None)
        channels = self.publishes_data or self.data_track.publishes
        offer = hub.publisher_offer(peer, audio_cid=audio, video_cid=video, data=channels)
        for muted_video, muted in self._pending_mutes.items():
            with contextlib.suppress(MediaError):  # a kind this offer has not: nothing to stop
                hub.set_track_muted(peer, muted_video, muted)
        self._pending_mutes.clear()
        self.send_offer(offer, now)
        if self.publishes_data:
            self._start_data()

    def _on_primary_connected(self, at: float) -> None:
        """A data publisher starts: on the single PC its channels are there already; on two PCs they come with
        the publisher offer, which a publisher of data alone makes now (with tracks, once they are acknowledged).
        Data tracks: our track is requested and known remote ones subscribed (`DataTrackRole`)."""
        self.driver.media_output(lambda: self.data_track.start(self.session))
        if not (self.publishes_data or self.data_track.publishes):
            return
        if self.single_pc:
            if self.publishes_data:
                self.driver.media_output(self._start_data)
        elif not self._cids and not self._offered:
            self._offered = True
            self.driver.media_output(lambda: self._publish(at))

    def _start_data(self) -> None:
        """Tells the hub to publish this participant's data messages (it writes them from the channel's opening).
        With ``--data-to N`` they go to the first N others (by identity) in the room now, and wait for someone
        to join when nobody else is there (`ParticipantsChanged`); while fewer than N, each newcomer is added
        (`_fill_destinations`), so a publisher that starts in a room still filling reaches the N asked for."""
        config = self.run.config
        session = self.driver.session
        room_view = session.room_view() if session is not None else {}
        chosen = destinations(config.data_to, self.driver.identity, room_view)
        self._data_waiting = config.data_to != "all" and not chosen
        if self._data_waiting:
            return
        self._publish_data(chosen)

    def _fill_destinations(self) -> None:
        """Keeps ``--data-to N`` at N while the room allows: a destination that left is dropped, and the first
        others not yet chosen fill the places (the hub keeps the message clock and counters)."""
        chosen, session = self._data_destinations, self.driver.session
        if chosen is None or session is None:
            return
        view = session.room_view()
        kept = [identity for identity in chosen if identity in view]
        if len(kept) == len(chosen) == int(self.run.config.data_to):
            return
        filled = destinations(self.run.config.data_to, self.driver.identity, view, kept)
        if filled != chosen and filled:
            self._publish_data(filled)

    def _publish_data(self, chosen: list[str]) -> None:
        hub, peer = self._hub()
        config = self.run.config
        self._data_destinations = chosen if config.data_to != "all" else None
        hub.data_publish(
            peer,
            config.data_channel,
            config.data_rate,
            config.data_size,
            topic=config.data_topic,
            destinations=chosen,
            identity=self.driver.identity,
            burst_count=config.data_burst,
            burst_every_s=config.data_burst_every_s,
        )

    def _resend_data(self, last_message_seq: int) -> None:
        if self.publishes_data and self.run.config.data_channel == "reliable":
            hub, peer = self._hub()
            hub.data_resend_after(peer, last_message_seq)

    def on_session_event(self, event: SessionEvent, now: float) -> None:
        super().on_session_event(event, now)
        if isinstance(event, ParticipantsChanged) and self.peer_id is not None:
            if self._data_waiting:
                self._start_data()
            else:
                self._fill_destinations()
            if self._video_tiles:
                self._apply_layout()  # a publisher that left frees its tile
        if isinstance(event, (DataTrackPublished, DataTrackHandles, RemoteDataTrackPublished, RequestFailed)):
            hub, peer = self.tier.hub, self.peer_id
            if hub is not None and peer is not None:
                self.data_track.on_event(event, self.session, hub, peer, self.active)

    def before_leave(self) -> None:
        self.data_track.before_leave(self.session, self.tier.hub, self.peer_id)

    def _on_remote_track(self, event: RemoteTrackPublished) -> None:
        self._remote_published_at.setdefault(event.track_sid, event.at)
        if event.track_type == TrackType.VIDEO and self.run.config.layout:
            self._place_video_tile(event.track_sid)

    def _place_video_tile(self, track_sid: str) -> None:
        """A new remote video track takes the next tile of the layout (`_apply_layout`)."""
        self._video_tiles.setdefault(track_sid, None)
        self._apply_layout()

    def _apply_layout(self) -> None:
        """Gives each live remote video track, in order of appearance, its tile's size, or disables it when the
        grid has no tile left, and sends a setting only where one changed. A track whose publisher left frees
        its tile for the next one, as a client's grid fills up again (tiles once only grew: with churn, newer
        publishers' video stayed disabled for good)."""
        live = self.session.live_remote_tracks()
        for gone in [sid for sid in self._video_tiles if sid not in live]:
            del self._video_tiles[gone]
        tiles = self.run.config.grid_tiles
        for tile, (track_sid, asked) in enumerate(list(self._video_tiles.items())):
            if tiles and tile >= tiles:
                request = track_setting(track_sid, disabled=True)
            else:
                main = tile == 0 and (tiles == 1 or not tiles)  # the speaker view's big tile
                quality, width, height = TILE_SIZES["main" if main else "grid" if 1 < tiles <= 4 else "thumb"]
                request = track_setting(track_sid, quality=quality, width=width, height=height)
            if request == asked:
                continue
            self._video_tiles[track_sid] = request
            self.session.send_request(request)
            self.run.counters["track_settings"] += 1

    # -- hub side ---------------------------------------------------------------------------

    def on_hub_event(
        self,
        event: _core.PcConnected | _core.IceStateChanged | _core.FirstPacket | _core.MediaResumed | _core.PeerFailed,
        at: float,
        now: float,
    ) -> None:
        """An event of this participant's peer, stamped ``at`` (perf_counter seconds) by the hub, handled at
        ``now``."""
        if self.driver.outcome:
            return
        if isinstance(event, _core.PcConnected):
            self.connected(event.primary, at, now)
        elif isinstance(event, _core.FirstPacket):
            published_at = self._remote_published_at.get(event.track_id)
            if published_at is not None:
                self.tier.record_first_packet(event.kind, max(0.0, at - published_at) * 1000)
        elif isinstance(event, _core.MediaResumed):
            self.driver.media_resumed(at)
        elif isinstance(event, _core.PeerFailed):
            self.failed(event.reason, event.detail)

    def account(self, stats: dict[str, Any], totals: MediaTotals, *, closed: bool = False) -> None:
        """Adds one peer's figures to ``totals``; a ``closed`` peer's (gone before the end) has no missing tracks."""
        totals.datagrams_sent += stats["datagrams_sent"]
        totals.bytes_sent += stats["bytes_sent"]
        totals.frames_sent += stats["frames_sent"]
        totals.frames_skipped += stats["frames_skipped"]
        totals.frames_muted += stats.get("frames_muted", 0)
        totals.foreign_datagrams += stats["foreign_datagrams"]
        totals.datagrams_truncated += stats["datagrams_truncated"]
        totals.keyframe_requests += stats["keyframe_requests"]
        totals.ice_restarts += stats.get("ice_restarts", 0)
        totals.rtp_past_stream_cap += stats.get("rtp_past_stream_cap", 0)
        totals.srtp_receive.account(stats)
        keep_rows = not closed or len(totals.track_rows) + len(totals.data.rows) < MAX_CLOSED_PEER_ROWS
        if "data" in stats:
            totals.data.account(self.driver.identity, self.driver.room, stats["data"], keep_rows=keep_rows)
        received: dict[str, str] = {}  # track id -> codec: a track counts once, however many SSRCs
        for track in stats["tracks"]:
            totals.packets_received += track["packets"]
            totals.bytes_received += track["bytes"]
            totals.packets_expected += track["expected"]
            totals.packets_lost += track["lost"]
            if track["packets"] > 0:
                received[track["track_id"]] = track["codec"]
                record_ms(totals.jitter_ms, track["jitter_ms"])
            if keep_rows:
                totals.track_rows.append({"identity": self.driver.identity, "room": self.driver.room, **track})
            else:
                totals.rows_not_listed += 1
        for track_id, codec in received.items():
            pair = (self.driver.identity, track_id)
            if pair in totals.received_pairs:
                continue  # received again by this participant's peer of a fresh join: one (subscriber, track)
            totals.received_pairs.add(pair)
            totals.tracks_received += 1
            totals.tracks_by_codec[codec] = totals.tracks_by_codec.get(codec, 0) + 1
        session, joined_at, now = self.driver.session, self.driver.joined_at, time.perf_counter()
        settled = joined_at is not None and now - joined_at >= MISSING_GRACE_S
        if session is not None and not self.driver.outcome and not closed and settled:
            missing = session.live_remote_tracks() - set(received) - session.muted_remote_tracks
            # Nor is a track this join heard of lately: one published near the end, or every track after a fresh
            # join (its new peer's figures start at 0, and its join state, these times included, starts afresh).
            published_at = self._remote_published_at
            missing = {sid for sid in missing if now - published_at.get(sid, -math.inf) >= MISSING_GRACE_S}
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
        tier = self.tier
        hub = tier.hub
        if hub is not None and self.peer_id is not None:
            stats = hub.remove_peer(self.peer_id)
            if stats is not None and tier.totals is None:  # closed before the end: its figures still count
                self.account(stats, tier.ended, closed=True)
            self.tier.participants.pop(self.peer_id, None)
            self.peer_id = None


__all__ = ["LightLeg", "LightTier", "MediaError", "publisher_role"]
