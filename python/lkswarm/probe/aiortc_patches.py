"""Two adaptations of aiortc 1.16 the probe tier needs, kept in one place with the reason for each.

1. Loopback candidates. aioice offers every local address except loopback,
   while the local livekit-server (and the light tier) live on 127.0.0.1. While
   probes run, `host_addresses` makes aioice offer exactly the run's
   ``media_bind_ip`` (process-wide: only the probe tier uses aiortc here), or,
   in an impaired namespace, the probe's own address: `bind_probe_address`
   sets it for the probe's operations task, and aiortc gathers inside tasks
   that inherit that context (lkswarm.probe.netns shapes each probe by address).

2. Jitter-buffer draining. aiortc's jitter buffer hands the decoder at most one
   complete frame per arriving packet. After a stall (a packet lost and then
   retransmitted), every frame that completed behind it stays queued and drains
   only as fast as new packets outnumber frames, so one loss adds latency for
   seconds (for audio, one packet per frame, for good). A browser decodes such
   a backlog at once. `drain_jitter_buffer` replaces a receiver's buffer by a
   `DrainingJitterBuffer` with aiortc's capacity and prefetch, which hands over
   every complete frame at once (and a video frame as soon as its marker-bit
   packet is in, as libwebrtc does, where aiortc waits for the next frame), so
   ``media_e2e`` measures the path, not these artefacts. It reaches into the
   receiver's private attributes; when they are missing (another aiortc
   version) the receiver keeps aiortc's own buffer.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import aioice.ice
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

DeliverFn = Callable[[RtpPacket, JitterFrame], None]

_RECEIVER = "_RTCRtpReceiver__"  # name-mangling prefix of RTCRtpReceiver's private attributes


_PROBE_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("lkswarm_probe_address", default=None)


def bind_probe_address(address: str) -> None:
    """From here on, the calling task (and the tasks it starts) gathers ICE candidates on ``address`` alone."""
    _PROBE_ADDRESS.set(address)


@contextlib.contextmanager
def host_addresses(bind_ip: str) -> Iterator[None]:
    """Within the block, aioice gathers exactly one host candidate address: the probe's own, else ``bind_ip``."""
    saved = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [_PROBE_ADDRESS.get() or bind_ip]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = saved


class DrainingJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, except that each packet releases every frame it completes."""

    def __init__(self, capacity: int, prefetch: int, is_video: bool, deliver: DeliverFn) -> None:
        super().__init__(capacity=capacity, prefetch=prefetch, is_video=is_video)
        self._deliver = deliver

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        while frame is not None:
            self._deliver(packet, frame)
            frame = self._remove_frame(packet.sequence_number)
        return pli_flag, None  # delivered already: the receiver has nothing left to queue

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        """Video: a frame is complete at its marker-bit packet, as in libwebrtc, not one frame later.

        aiortc waits for the first packet of the next frame, which adds a frame interval (67 ms at
        15 fps) to every frame's latency. Audio keeps aiortc's rule (and its prefetch).
        """
        if not self._is_video or self._origin is None:
            return super()._remove_frame(sequence_number)
        packets: list[RtpPacket] = []
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None  # a hole: wait for the retransmission
            if packets and packet.timestamp != packets[0].timestamp:
                break  # the next frame started: this one is complete even if its marker was lost
            packets.append(packet)
            if packet.marker:
                break
        else:
            return None
        self.remove(len(packets))
        return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packets[0].timestamp)  # type: ignore[attr-defined]


def drain_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Gives ``receiver`` a `DrainingJitterBuffer` (before it starts); False when aiortc's internals differ."""
    state: dict[str, Any] = vars(receiver)
    names = ("jitter_buffer", "decoder_queue", "codecs", "timestamp_mapper")
    if not all(_RECEIVER + name in state for name in names):
        return False
    old: JitterBuffer = state[_RECEIVER + "jitter_buffer"]
    decoder_queue = state[_RECEIVER + "decoder_queue"]
    codecs = state[_RECEIVER + "codecs"]
    mapper = state[_RECEIVER + "timestamp_mapper"]

    def deliver(packet: RtpPacket, frame: JitterFrame) -> None:
        # What RTCRtpReceiver._handle_rtp_packet does with the one frame aiortc's buffer returns.
        codec = codecs.get(packet.payload_type)
        if codec is not None and state.get(_RECEIVER + "decoder_thread") is not None:
            frame.timestamp = mapper.map(frame.timestamp)
            decoder_queue.put((codec, frame))

    state[_RECEIVER + "jitter_buffer"] = DrainingJitterBuffer(old.capacity, old._prefetch, old._is_video, deliver)
    return True
