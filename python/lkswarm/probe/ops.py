"""What crosses between a probe's signaling (main loop) and its `ProbePeer` (probe loop), typed.

Signaling queues `ProbeOp`s on the peer; the peer posts `PeerEvent`s back. Neither
side dispatches on strings. No aiortc here, so the main loop can use these without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from lkswarm.signal.enums import SignalTarget


class ProbeOp(Enum):
    """The operations a probe's signaling queues on its peer, run one at a time in signaling order."""

    ANSWER_OFFER = "answer_offer"  # (sdp, offer id): the subscriber PC answers the server's offer
    PUBLISH = "publish"  # (audio cid, video cid): the publisher PC offers the probe's two tracks
    ACCEPT_ANSWER = "accept_answer"  # (sdp): the server's answer to the publisher offer
    ADD_CANDIDATE = "add_candidate"  # (target, candidate init JSON): a trickled server candidate


@dataclass(frozen=True, slots=True)
class PeerAnswered:
    at: float  # perf_counter seconds
    sdp: str
    offer_id: int


@dataclass(frozen=True, slots=True)
class PeerOffered:
    at: float
    sdp: str


@dataclass(frozen=True, slots=True)
class PeerConnected:
    at: float
    target: SignalTarget


@dataclass(frozen=True, slots=True)
class PeerFailed:
    at: float
    reason: str
    detail: str


PeerEvent = PeerAnswered | PeerOffered | PeerConnected | PeerFailed
EmitFn = Callable[[PeerEvent], None]
