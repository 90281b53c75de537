"""Which participants are probes: pure functions of the configuration (no aiortc, no I/O)."""

from __future__ import annotations

from lkswarm.config import RunConfig
from lkswarm.errors import ConfigError
from lkswarm.probe.barcode import MAX_SLOTS


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
