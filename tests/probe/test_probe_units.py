"""The probe tier without sockets: who is a probe, the jitter-buffer drain, the report section."""

from __future__ import annotations

import asyncio
import subprocess

import aioice.ice
import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from fakes import FakeHost, RecordingMetrics, fake_run
from helpers import LKSWARM
from lkswarm.config import RunConfig, Stage
from lkswarm.errors import ConfigError
from lkswarm.probe.aiortc_patches import DrainingJitterBuffer, bind_probe_address, drain_jitter_buffer, host_addresses
from lkswarm.probe.ops import PeerConnected, PeerFailed
from lkswarm.probe.seats import probe_count, probe_seats
from lkswarm.probe.tier import ProbeLeg, ProbeTier
from lkswarm.probe.totals import ProbeTotals
from lkswarm.signal.enums import SignalTarget
from lkswarm.signal.session import SessionState, SignalSession


def test_each_probe_task_gathers_on_its_own_address() -> None:
    """aioice asks for host addresses inside the probe's tasks: a probe's bound address reaches its
    children and no other probe's (lkswarm.probe.netns shapes each probe by that address)."""

    async def gather() -> list[str]:
        await asyncio.sleep(0)  # the other probes run in between
        return aioice.ice.get_host_addresses(True, False)

    async def probe(address: str | None) -> tuple[list[str], list[str]]:
        if address is not None:
            bind_probe_address(address)
        own = await gather()
        child = await asyncio.ensure_future(gather())  # aiortc gathers in tasks it starts (asyncio.gather)
        return own, child

    async def main() -> list[tuple[list[str], list[str]]]:
        return list(await asyncio.gather(probe("10.213.0.2"), probe("10.213.0.3"), probe(None)))

    with host_addresses("127.0.0.1"):
        first, second, unbound = asyncio.run(main())
    assert first == (["10.213.0.2"], ["10.213.0.2"]) and second == (["10.213.0.3"], ["10.213.0.3"])
    assert unbound == (["127.0.0.1"], ["127.0.0.1"])


def test_probe_count_from_number_or_fraction() -> None:
    assert probe_count(RunConfig(participants=34, probes=4)) == 4
    assert probe_count(RunConfig(rooms=2, participants=50, probe_fraction=0.1)) == 10
    assert probe_count(RunConfig(participants=5, probe_fraction=0.01)) == 1  # a fraction > 0 means at least one
    assert probe_count(RunConfig(participants=5)) == 0
    with pytest.raises(ConfigError, match="not both"):
        probe_count(RunConfig(participants=10, probes=1, probe_fraction=0.5))
    with pytest.raises(ConfigError, match="subset"):
        probe_count(RunConfig(participants=3, probes=4))


def test_probe_seats_spread_over_rooms_and_skip_the_publishers() -> None:
    assert probe_seats(RunConfig(participants=34, probes=4)) == {(0, 4): 0, (0, 12): 1, (0, 21): 2, (0, 29): 3}
    seats = probe_seats(RunConfig(rooms=3, participants=10, probes=6, audio_publishers=2, video_publishers=1))
    assert sorted(seats) == [(0, 4), (0, 8), (1, 4), (1, 8), (2, 4), (2, 8)]
    assert sorted(seats.values()) == list(range(6))
    assert all(seat >= 3 for _, seat in seats)  # seats 0..2 publish in the light tier
    # More probes than non-publisher seats: the publishers' seats are used too.
    assert len(probe_seats(RunConfig(participants=4, probes=4, video_publishers=2))) == 4
    # With stages the rooms' size follows the peak target.
    staged = RunConfig(rooms=2, participants=1, probes=2, stages=(Stage(duration_s=5, target=40),))
    assert probe_seats(staged) == {(0, 10): 0, (1, 10): 1}


def packet(sequence_number: int, timestamp: int, marker: int = 0) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=sequence_number, timestamp=timestamp, marker=marker)
    p._data = bytes([sequence_number % 256])  # type: ignore[attr-defined]
    return p


def test_draining_jitter_buffer_releases_a_backlog_at_once() -> None:
    """aiortc's buffer releases one frame per packet after a stall; ours releases all that are complete."""
    delivered: list[int] = []
    buffer = DrainingJitterBuffer(512, 0, True, lambda _p, frame: delivered.append(frame.timestamp))
    stock = JitterBuffer(512, is_video=True)
    stock_out: list[int] = []
    # Frames of one packet each, timestamps 0, 3000, ...; packet 1 is late (lost, then retransmitted).
    order = [0, *range(2, 8), 1, 8]
    for seq in order:
        assert buffer.add(packet(seq, seq * 3000)) == (False, None)
        _, frame = stock.add(packet(seq, seq * 3000))
        if frame is not None:
            stock_out.append(frame.timestamp)
    # A frame is complete when the next one starts: packet 1 completes frames 0..6 at once, 8 completes 7.
    assert delivered == [t * 3000 for t in range(8)]
    assert stock_out == [0, 3000]  # one frame per packet: the stock buffer still holds frames 2..7 back


def test_a_video_frame_is_complete_at_its_marker_packet() -> None:
    delivered: list[tuple[int, bytes]] = []
    buffer = DrainingJitterBuffer(512, 0, True, lambda _p, frame: delivered.append((frame.timestamp, frame.data)))
    buffer.add(packet(10, 9000))
    assert delivered == []  # the frame's second packet is still missing
    buffer.add(packet(11, 9000, marker=1))
    assert delivered == [(9000, bytes([10, 11]))]  # at once, without waiting for the next frame
    buffer.add(packet(13, 12000, marker=1))
    assert len(delivered) == 1  # packet 12 is missing
    buffer.add(packet(12, 12000))
    assert delivered[1:] == [(12000, bytes([12, 13]))]
    audio: list[int] = []
    sound = DrainingJitterBuffer(16, 4, False, lambda _p, frame: audio.append(frame.timestamp))
    for seq in range(6):
        sound.add(packet(seq, seq * 960, marker=1))
    # Audio keeps aiortc's rule: a frame is complete when the next one starts, and 4 complete frames
    # (80 ms) stay buffered, so 6 packets release frames 0 and 1.
    assert audio == [0, 960]


def test_drain_jitter_buffer_swaps_a_real_receivers_buffer() -> None:
    async def main() -> None:
        pc = RTCPeerConnection()
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        assert drain_jitter_buffer(receiver)
        buffer = vars(receiver)["_RTCRtpReceiver__jitter_buffer"]
        assert isinstance(buffer, DrainingJitterBuffer) and buffer.capacity == 512
        await pc.close()

    asyncio.run(main())


def test_probe_totals_report_and_saturation_warning() -> None:
    totals = ProbeTotals(probes=2, started=2, wall_s=10.0, cpu_s=4.0, loop_cpu_s=9.5)
    assert totals.saturated  # the probe loop thread was busy 95 % of the run
    assert "saturated" in totals.warnings()[0]
    report = totals.report()
    assert report["cpu_share_of_core"] == 0.4 and report["cpu_per_probe_s"] == 2.0
    assert ProbeTotals().report() == {}


def test_a_probe_that_never_became_active_is_a_warning_naming_its_states() -> None:
    totals = ProbeTotals(probes=2, started=2, wall_s=10.0)
    stuck = {"subscriber": {"ice": "completed", "connection": "connecting"}}
    totals.per_probe = [
        {"identity": "p3", "outcome": "active", "peer_connections": {}},
        {"identity": "p5", "outcome": "not_active", "peer_connections": stuck},
        {"identity": "p7", "outcome": "not_active"},  # joined, but no offer came before the end
        {"identity": "p9", "outcome": "failed:probe_dtls_failed"},  # failures are counted and listed elsewhere
    ]
    assert totals.warnings() == [
        "probe p5 never became ACTIVE before the run ended (subscriber: ICE completed, connecting); "
        "its media figures are empty",
        "probe p7 never became ACTIVE before the run ended (no PeerConnection yet); its media figures are empty",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--probes", "5"], "subset"), (["--probes", "1", "--probe-fraction", "0.5"], "not both")],
)
def test_cli_rejects_impossible_probe_options(options: list[str], message: str) -> None:
    out = subprocess.run(
        [*LKSWARM, "run", "--rooms", "1", "--participants", "2", *options, "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr


def joined_probe_leg(calls: list[str]) -> tuple[ProbeLeg, FakeHost, ProbeTier]:
    """A probe leg whose session is joined; the probe loop's calls are recorded as "call" in ``calls``."""
    run = fake_run(RunConfig())
    tier = ProbeTier(run, plan=[])
    tier.call = lambda fn, *args: calls.append("call")
    driver = FakeHost(run, "p1")
    driver.session = SignalSession("p1", "token", join_timeout_s=15)
    driver.session.state = SessionState.JOINED  # the fresh join was answered: its own peer's connect counts
    return ProbeLeg(tier, driver, slot=0), driver, tier


def test_events_of_a_peer_that_a_fresh_join_replaced_are_dropped() -> None:
    """A closing peer can still post `connected`: it must not mark the new join ACTIVE or announce tracks."""
    calls: list[str] = []
    participant, driver, _tier = joined_probe_leg(calls)
    run = driver.run
    driver.output = lambda step: calls.append("announce")
    participant.on_joined(0.0)  # generation 1
    participant.on_joined(0.0)  # a fresh join: generation 2
    participant.on_peer_event(1, PeerConnected(0.0, SignalTarget.SUBSCRIBER))
    assert not participant.active and calls == ["call"]  # only the old peer's close was asked for
    run.metrics = RecordingMetrics(calls)
    participant.on_peer_event(2, PeerConnected(0.0, SignalTarget.SUBSCRIBER))
    assert participant.active and calls == ["call", "announce", "active"] and run.counters["active"] == 1


def test_a_fresh_join_drops_the_old_probe_peers_events_before_the_new_join_is_answered() -> None:
    """leave(RECONNECT): the old peer's failure or connect, posted between the leave and the new JoinResponse,
    carried the current generation (it was bumped only by the new join's peer) and failed the participant."""
    calls: list[str] = []
    participant, driver, tier = joined_probe_leg(calls)
    participant.on_joined(0.0)  # generation 1
    old_peer = participant.peer
    participant.abandon_join()  # the leave: the old peer closes now
    assert participant.peer is None and calls == ["call"]
    assert participant.measured_peer is old_peer  # a run that ends now still reads its figures
    participant.abandon_join()  # the fresh join's attempt failed too: still the old peer's figures
    assert participant.measured_peer is old_peer
    participant.on_peer_event(1, PeerFailed(0.0, "ice_failed", "the old PeerConnection"))
    assert driver.outcome is None and tier.failures == []


def test_a_closed_probe_keeps_the_packets_it_received_before_it_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that failed or left before the end reported 0 packets and 0 lost (its PeerConnection was gone),
    while its frames stayed in the totals: the loss ratios covered the surviving probes only."""
    from lkswarm.probe.capture import CaptureRegistry
    from lkswarm.probe.peer import ProbePeer

    peer = ProbePeer(0, CaptureRegistry(), lambda event: None, connect_timeout_s=5.0)
    counted = {
        "audio": {"packets_received": 500, "packets_lost": 7},
        "video": {"packets_received": 900, "packets_lost": 3},
    }

    async def live_counters() -> dict[str, dict[str, int]]:
        return counted

    async def scenario() -> dict[str, dict[str, int]]:
        monkeypatch.setattr(peer, "receive_stats", live_counters)
        await peer.close()
        monkeypatch.undo()  # the real method, on a closed peer
        return await peer.receive_stats()

    assert asyncio.run(scenario()) == counted
    assert peer.closed


def test_probe_ratios_over_nothing_are_null_not_zero() -> None:
    """Probes that decoded nothing read 0 % loss and 0 fps: `probes.video_loss_ratio<1%` passed them."""
    report = ProbeTotals(probes=2).report()
    assert report["frame_rate_fps"] == {"mean": None, "min": None}
    assert report["video_loss_ratio"] is None
    assert report["audio"]["loss_ratio"] is None and report["audio"]["concealment_ratio"] is None
