"""The report's ``probes`` section: what the probe tier's decoders saw, what it cost, and which probes failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from lkswarm.engine.outcome import Outcome
from lkswarm.metrics import new_histogram, summarize

if TYPE_CHECKING:
    from lkswarm.probe.peer import ProbePeer

PROBE_LOOP_LAG_P99_MS = 20.0  # as for the main loop
PROBE_LOOP_CPU_SHARE = 0.85  # the probe loop thread busy this much of the wall time is saturated
AUDIO_RATE_HZ = 48_000


@dataclass(slots=True)
class ProbeTotals:
    """Figures of every probe, gathered on the probe loop at the end of the run."""

    probes: int = 0  # probe seats
    started: int = 0  # probe participants started (more than the seats with churn)
    active_at_end: int = 0
    failed: int = 0
    video_tracks: int = 0
    frames_decoded: int = 0
    frames_identified: int = 0
    frames_skipped: int = 0
    freezes: int = 0
    freeze_s: float = 0.0
    frame_rates_fps: list[float] = field(default_factory=list)
    decode_errors: int = 0
    video_packets_received: int = 0
    video_packets_lost: int = 0
    audio_tracks: int = 0
    audio_frames_decoded: int = 0
    audio_samples_decoded: int = 0
    audio_concealed_samples: int = 0
    audio_packets_received: int = 0
    audio_packets_lost: int = 0
    audio_markers_heard: int = 0
    e2e_ms: HdrHistogram = field(default_factory=new_histogram)
    audio_e2e_ms: HdrHistogram = field(default_factory=new_histogram)
    loop_lag_ms: HdrHistogram = field(default_factory=new_histogram)
    cpu_s: float = 0.0
    loop_cpu_s: float = 0.0
    wall_s: float = 0.0
    per_probe: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    network: dict[str, Any] | None = None  # the impaired namespace's settings and qdisc counters (lkswarm.probe.netns)

    def add_outcome(self, identity: str, outcome: Outcome | None, active: bool) -> None:
        row = next((r for r in self.per_probe if r["identity"] == identity), None)
        if row is not None:
            row["outcome"] = str(outcome) if outcome is not None else ("active" if active else "not_active")
        if outcome is not None and outcome.is_failed:
            self.failed += 1
        elif outcome is None and active:
            self.active_at_end += 1

    @property
    def saturated(self) -> bool:
        lag_p99 = summarize(self.loop_lag_ms)["p99"]
        share = self.loop_cpu_s / self.wall_s if self.wall_s > 0 else 0.0
        return lag_p99 > PROBE_LOOP_LAG_P99_MS or share > PROBE_LOOP_CPU_SHARE

    def warnings(self) -> list[str]:
        if not self.probes:
            return []
        out = [self._not_active_warning(row) for row in self.per_probe if row["outcome"] == "not_active"]
        if self.saturated:
            lag_p99 = summarize(self.loop_lag_ms)["p99"]
            share = self.loop_cpu_s / self.wall_s if self.wall_s > 0 else 0.0
            out.append(
                f"the probes saturated their event loop (lag p99 {lag_p99:.1f} ms, loop thread busy "
                f"{share * 100:.0f} % of the run): probe latency and frame-rate figures include the generator's "
                "own queueing. Use fewer probes per process."
            )
        return out

    @staticmethod
    def _not_active_warning(row: dict[str, Any]) -> str:
        """A probe that neither failed nor became ACTIVE: its figures are empty, and the states say why."""
        states = row.get("peer_connections") or {}
        where = "; ".join(f"{name}: ICE {s['ice']}, {s['connection']}" for name, s in states.items())
        return (
            f"probe {row['identity']} never became ACTIVE before the run ended "
            f"({where or 'no PeerConnection yet'}); its media figures are empty"
        )

    def report(self) -> dict[str, Any]:
        if not self.probes:
            return {}
        rates = self.frame_rates_fps
        audio_expected = self.audio_samples_decoded + self.audio_concealed_samples
        audio_packets = self.audio_packets_received + self.audio_packets_lost
        video_packets = self.video_packets_received + self.video_packets_lost
        return {
            "count": self.probes,
            "started": self.started,
            "active_at_end": self.active_at_end,
            "failed": self.failed,
            "frames_decoded": self.frames_decoded,
            "frames_identified": self.frames_identified,
            "frames_skipped": self.frames_skipped,
            "video_tracks": self.video_tracks,
            "frame_rate_fps": {
                # None where no track had two frames: no rate was measured (a 0 read as a stalled video)
                "mean": round(sum(rates) / len(rates), 2) if rates else None,
                "min": round(min(rates), 2) if rates else None,
            },
            "freezes": self.freezes,
            "freeze_s": round(self.freeze_s, 3),
            "decode_errors": self.decode_errors,
            "video_packets_received": self.video_packets_received,
            "video_packets_lost": self.video_packets_lost,
            "video_loss_ratio": round(self.video_packets_lost / video_packets, 6) if video_packets else None,
            "audio": {
                "tracks": self.audio_tracks,
                "frames_decoded": self.audio_frames_decoded,
                "packets_received": self.audio_packets_received,
                "packets_lost": self.audio_packets_lost,
                "loss_ratio": round(self.audio_packets_lost / audio_packets, 6) if audio_packets else None,
                "concealed_ms": round(self.audio_concealed_samples * 1000 / AUDIO_RATE_HZ, 1),
                "concealment_ratio": (
                    round(self.audio_concealed_samples / audio_expected, 6) if audio_expected else None
                ),
                "markers_heard": self.audio_markers_heard,
                "marker_latency_ms": summarize(self.audio_e2e_ms),
            },
            "cpu_s": round(self.cpu_s, 3),
            "cpu_per_probe_s": round(self.cpu_s / max(1, self.started), 3),
            "cpu_share_of_core": round(self.cpu_s / self.wall_s, 4) if self.wall_s > 0 else 0.0,
            "loop_cpu_s": round(self.loop_cpu_s, 3),
            "loop_lag_ms": summarize(self.loop_lag_ms),
            "saturated": self.saturated,
            "per_probe": self.per_probe,
            "failures": self.failures,
            "network": self.network,
        }


async def collect_peer(
    totals: ProbeTotals,
    identity: str,
    room: str,
    peer: ProbePeer | None,
    published: frozenset[str] = frozenset(),
    now: float | None = None,
) -> None:
    """Adds one probe's receive side to the totals (on the probe loop, where the figures are written).

    ``published``: the track sids still published at the end, as this probe's session knows them; a video
    track among them whose frames stopped is frozen until ``now`` (`VideoReceiveStats.close`)."""
    row: dict[str, Any] = {"identity": identity, "room": room, "outcome": "", "video_tracks": 0, "frames_decoded": 0}
    totals.per_probe.append(row)
    if peer is None:
        return
    row["slot"] = peer.slot
    # Where each PeerConnection stands at the end: a probe that never became ACTIVE says which step it was
    # stuck in (ICE checks, or DTLS after ICE), as the W3C states name them.
    row["peer_connections"] = peer.connection_states()
    counters = await peer.receive_stats()
    totals.video_packets_received += counters["video"]["packets_received"]
    totals.video_packets_lost += counters["video"]["packets_lost"]
    totals.audio_packets_received += counters["audio"]["packets_received"]
    totals.audio_packets_lost += counters["audio"]["packets_lost"]
    for video in peer.video_rx:
        if now is not None:
            video.close(now, video.track_sid in published)
        totals.video_tracks += 1
        totals.frames_decoded += video.frames_decoded
        totals.frames_identified += video.frames_identified
        totals.frames_skipped += video.frames_skipped
        totals.freezes += video.freezes
        totals.freeze_s += video.freeze_s
        if video.frames_decoded > 1:
            totals.frame_rates_fps.append(video.frame_rate_fps)
    for audio in peer.audio_rx:
        totals.audio_tracks += 1
        totals.audio_frames_decoded += audio.frames_decoded
        totals.audio_samples_decoded += audio.samples_decoded
        totals.audio_concealed_samples += audio.concealed_samples
        totals.audio_markers_heard += audio.markers_heard
        totals.audio_e2e_ms.add(audio.e2e_ms)
    totals.e2e_ms.add(peer.e2e_ms)
    row.update(
        video_tracks=len(peer.video_rx),
        audio_tracks=len(peer.audio_rx),
        frames_decoded=sum(v.frames_decoded for v in peer.video_rx),
        frames_identified=sum(v.frames_identified for v in peer.video_rx),
        freezes=sum(v.freezes for v in peer.video_rx),
        media_e2e_p50_ms=summarize(peer.e2e_ms)["p50"],
        audio_frames_decoded=sum(a.frames_decoded for a in peer.audio_rx),
    )
