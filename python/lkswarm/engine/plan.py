"""The arrival plan: who joins when, in which room and seat, and who leaves when.

Theory of operation
-------------------
A run is planned completely before it starts, so the schedule is an open
model (nothing the server does can slow arrivals down) and every scheduled
participant is known up front and ends in exactly one outcome.

The plan follows a *population target* over time, like k6's stages:

- Without stages the target climbs to ``rooms * participants`` at ``rate``
  joins per second (constant or Poisson) and holds until ``duration_s``;
  nobody leaves before the end.
- With stages, each stage moves the target linearly from the previous
  stage's target to its own over its duration. A rise schedules arrivals
  evenly over the stage; a fall schedules departures of the most recent
  joiners (last in, first out).
- With ``churn_rate`` > 0, while the target is flat, the longest-lived
  participant leaves every ``1 / churn_rate`` seconds and a replacement
  joins at the same instant in the same room and seat.

An arrival takes the room with the fewest planned occupants (lowest index on
ties) and the lowest free *seat* in it. Seats decide publishing (seat 0 … are
the publishers, as in ``lk perf load-test``), so a replacement for a
publisher publishes too.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from lkswarm.config import RunConfig


@dataclass(frozen=True, slots=True)
class Arrival:
    """One planned participant."""

    index: int  # position in the plan; also names the identity
    start_s: float  # intended start, seconds after the run's start
    room_index: int
    seat: int  # position within its room; publishers sit first
    leave_s: float | None = None  # planned departure; None stays to the end


class Rooms:
    """Seat bookkeeping while the plan is built."""

    def __init__(self, rooms: int) -> None:
        self.free_seats: list[list[int]] = [[] for _ in range(rooms)]  # min-heaps of released seats
        self.next_seat = [0] * rooms
        self.occupancy = [0] * rooms

    def take(self) -> tuple[int, int]:
        room = min(range(len(self.occupancy)), key=lambda r: (self.occupancy[r], r))
        return room, self.take_in(room)

    def take_in(self, room: int) -> int:
        self.occupancy[room] += 1
        if self.free_seats[room]:
            return heapq.heappop(self.free_seats[room])
        seat = self.next_seat[room]
        self.next_seat[room] += 1
        return seat

    def release(self, room: int, seat: int) -> None:
        self.occupancy[room] -= 1
        heapq.heappush(self.free_seats[room], seat)


class _Builder:
    def __init__(self, rooms: int) -> None:
        self.rooms = Rooms(rooms)
        self.starts: list[tuple[float, int, int]] = []  # (start_s, room, seat), by index
        self.leaves: dict[int, float] = {}
        self.live: deque[int] = deque()  # indices in join order

    def join(self, at_s: float, room_seat: tuple[int, int] | None = None) -> None:
        room, seat = room_seat if room_seat is not None else self.rooms.take()
        self.starts.append((at_s, room, seat))
        self.live.append(len(self.starts) - 1)

    def leave_newest(self, at_s: float) -> None:
        self._leave(self.live.pop(), at_s)

    def _leave(self, index: int, at_s: float) -> None:
        self.leaves[index] = at_s
        _, room, seat = self.starts[index]
        self.rooms.release(room, seat)

    def churn(self, from_s: float, to_s: float, churn_rate: float) -> None:
        """Replaces the oldest participant every 1/churn_rate s within (from_s, to_s)."""
        if churn_rate <= 0 or not self.live:
            return
        t = from_s + 1.0 / churn_rate
        while t < to_s:
            oldest = self.live.popleft()
            self.leaves[oldest] = t
            _, room, seat = self.starts[oldest]
            self.starts.append((t, room, seat))  # the seat passes straight to the replacement
            self.live.append(len(self.starts) - 1)
            t += 1.0 / churn_rate

    def arrivals(self) -> list[Arrival]:
        return [
            Arrival(index, start_s, room, seat, self.leaves.get(index))
            for index, (start_s, room, seat) in enumerate(self.starts)
        ]


def owns_room(room_index: int, worker: tuple[int, int]) -> bool:
    """Whether generator process ``worker`` = (index, count) runs this room (``run --workers``)."""
    index, count = worker
    return room_index % count == index


def worker_plan(config: RunConfig, worker: tuple[int, int]) -> list[Arrival]:
    """The arrivals of the rooms ``worker`` runs: its share of the single-process plan, unchanged."""
    return [a for a in build_plan(config) if owns_room(a.room_index, worker)]


def _ramp_offsets(config: RunConfig) -> Iterator[float]:
    """The start of each configured participant (no stages) that falls within the run's duration."""
    rng = random.Random(config.seed)
    t = 0.0
    for i in range(config.total_participants):
        offset = t if config.arrival == "poisson" else i / config.rate
        if offset >= config.duration_s:
            return
        yield offset
        if config.arrival == "poisson":
            t += rng.expovariate(config.rate)


def unstarted_note(config: RunConfig) -> str | None:
    """Why some configured participants never start: at ``--rate`` their start falls past ``--duration`` (the plan
    leaves them out, so they are in no outcome). None when everyone starts, or stages set the plan."""
    if config.stages:
        return None
    total = config.total_participants
    started = sum(1 for _ in _ramp_offsets(config))
    if started >= total:
        return None
    ramp = f"the ramp at --rate {config.rate:g}/s ({config.arrival}) needs about {total / config.rate:.3g} s"
    return (
        f"{total - started} of the {total} participants ({config.rooms} room(s) of {config.participants}) were never "
        f"started: {ramp}, longer than --duration {config.duration_s:g} s; lengthen --duration or raise --rate"
    )


def build_plan(config: RunConfig) -> list[Arrival]:
    """Every participant of the run, in order of intended start."""
    builder = _Builder(config.rooms)
    if not config.stages:
        for offset in _ramp_offsets(config):
            builder.join(offset)
        ramp_end_s = builder.starts[-1][0] if builder.starts else 0.0
        builder.churn(ramp_end_s, config.duration_s, config.churn_rate)
    else:
        stage_start_s, target = 0.0, 0
        for stage in config.stages:
            change = stage.target - target
            if change > 0:
                for k in range(change):
                    builder.join(stage_start_s + stage.duration_s * k / change)
            elif change < 0:
                for k in range(-change):
                    builder.leave_newest(stage_start_s + stage.duration_s * (k + 0.5) / -change)
            else:
                builder.churn(stage_start_s, stage_start_s + stage.duration_s, config.churn_rate)
            stage_start_s += stage.duration_s
            target = stage.target
    plan = builder.arrivals()
    plan.sort(key=lambda a: (a.start_s, a.index))
    return plan
