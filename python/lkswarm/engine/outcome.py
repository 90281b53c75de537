"""How a participant ends: `Outcome(kind, reason)`, decided once per participant.

The report keys its counters by the outcome's text (``completed``, ``left:REASON``,
``failed:REASON``), so `str(outcome)` and `Outcome.parse` are the one encoding
and the one decoding of that text; nothing else builds or splits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OutcomeKind(StrEnum):
    COMPLETED = "completed"  # alive when the run (or its planned departure) ended it
    LEFT = "left"  # the server removed it (leave with DISCONNECT); the reason is the DisconnectReason
    FAILED = "failed"  # the reason is a short code; a detail sentence travels beside it


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.FAILED, reason)

    @classmethod
    def left(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.LEFT, reason)

    @classmethod
    def parse(cls, text: str) -> Outcome:
        """The outcome a report key names; anything but ``completed``/``left:`` counts as failed, as it always has."""
        kind, _, reason = text.partition(":")
        if kind == OutcomeKind.COMPLETED:
            return COMPLETED
        if kind == OutcomeKind.LEFT:
            return cls(OutcomeKind.LEFT, reason)
        return cls(OutcomeKind.FAILED, reason)

    @property
    def is_failed(self) -> bool:
        return self.kind is OutcomeKind.FAILED

    def __str__(self) -> str:
        return self.kind.value if self.kind is OutcomeKind.COMPLETED else f"{self.kind.value}:{self.reason}"


COMPLETED = Outcome(OutcomeKind.COMPLETED)
WORKER_CRASHED = Outcome.failed("worker_crashed")
