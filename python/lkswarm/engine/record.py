"""What a run produced, as plain data: the `Tally` kept while it runs and the `RunRecord` `Engine.run()` returns.

The report (`lkswarm.report.build`) is a pure function of a `RunRecord`; nothing
in it reaches back into the engine, the drivers or the tiers.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lkswarm.config import RunConfig
from lkswarm.engine.outcome import Outcome
from lkswarm.engine.ports import TierTotals
from lkswarm.metrics import PhaseMetrics
from lkswarm.signal.enums import QUALITY_BEST_FIRST

MAX_FAILED_ROWS = 1000  # failed participants listed one by one in the report
DETAIL_CHARS = 200  # of a failed participant's detail, in its row


@dataclass(slots=True)
class FailedRow:
    identity: str
    room: str
    outcome: Outcome
    detail: str
    at_s: float  # seconds since the run's start

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "room": self.room,
            "outcome": str(self.outcome),
            "detail": self.detail[:DETAIL_CHARS],
            "at_s": round(self.at_s, 3),
        }


@dataclass(slots=True)
class Tally:
    """Run-wide counts that participants add to as they go (one place per fact)."""

    joined: int = 0
    alive: int = 0  # started and not yet ended
    outcomes: collections.Counter[Outcome] = field(default_factory=collections.Counter)
    failure_details: dict[Outcome, str] = field(default_factory=dict)  # the first detail seen per outcome
    failed_rows: list[FailedRow] = field(default_factory=list)
    pinged: set[int] = field(default_factory=set)  # plan indices with at least one ping_rtt
    server_version: str = ""

    def outcome(self, identity: str, room: str, outcome: Outcome, detail: str, at_s: float) -> None:
        self.outcomes[outcome] += 1
        self.alive -= 1
        if detail and outcome not in self.failure_details:
            self.failure_details[outcome] = detail
        if outcome.is_failed and len(self.failed_rows) < MAX_FAILED_ROWS:
            self.failed_rows.append(FailedRow(identity, room, outcome, detail, at_s))

    def outcome_texts(self) -> dict[str, int]:
        """Outcome counts keyed as the report and Prometheus name them (``failed:REASON``)."""
        return {str(outcome): count for outcome, count in self.outcomes.items()}


def quality_rank(quality: int) -> int:
    """0 for EXCELLENT up to 3 for LOST; a value a newer server added ranks below LOST, so it is never hidden."""
    return QUALITY_BEST_FIRST.index(quality) if quality in QUALITY_BEST_FIRST else len(QUALITY_BEST_FIRST)


@dataclass(slots=True)
class ServerQuality:
    """What livekit-server told one participant about its own connection: the last and the worst estimate.

    The worst quality and the lowest score are kept apart: the server scores each of a participant's
    tracks and reports the lowest quality, so a lower score can come with the same quality.
    """

    last: int  # a `ConnectionQuality` value
    last_score: float  # MOS, 1.0 to 4.5
    worst: int
    worst_score: float
    reports: int = 1

    @classmethod
    def first(cls, quality: int, score: float) -> ServerQuality:
        return cls(quality, score, quality, score)

    def add(self, quality: int, score: float) -> None:
        self.last, self.last_score = quality, score
        if quality_rank(quality) > quality_rank(self.worst):
            self.worst = quality
        self.worst_score = min(self.worst_score, score)
        self.reports += 1


@dataclass(slots=True, frozen=True)
class ParticipantRow:
    """One started participant at the end of the run: what the report's room table needs."""

    room: str
    join_ms: float | None  # from its intended start to its JoinResponse; None if it never joined
    outcome: Outcome | None  # None: still alive when the engine stopped it (it then completed)
    active_at_end: bool
    quality: ServerQuality | None = None  # None: the server never told it its own connection quality


@dataclass(slots=True)
class RunRecord:
    """Everything the report is built from, returned by `Engine.run()`."""

    config: RunConfig
    started_at: datetime
    duration_s: float
    room_names: list[str]  # one per scheduled participant, in plan order
    participants: list[ParticipantRow]  # one per started participant
    tally: Tally
    counters: collections.Counter[str]
    metrics: PhaseMetrics
    messages_received: collections.Counter[str]
    timeline: dict[str, Any]
    tiers: list[TierTotals]
    room_check: dict[str, Any]
    alive_at_end: int
    departed: int
    late_starts: int
    cpu_s: float
    max_rss_mb: float
    rss_start_mb: float
    rss_ready_mb: float
    rss_end_mb: float
    fd_limit: int
    interrupted: dict[str, Any] | None = None  # {"signal": "SIGINT", "at_s": 10.2} when a stop ended the run early
    open_plan: bool = False  # arrivals added as it ran (a capacity search), not a plan built from its config

    @property
    def scheduled(self) -> int:
        return len(self.room_names)

    @property
    def started(self) -> int:
        return len(self.participants)
