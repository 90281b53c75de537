"""The capacity search as a sans-I/O state machine: which level to measure next, given the verdicts so far.

Theory of operation
===================

`Search` does no I/O and keeps no clock. It only decides; the caller (the ``capacity`` command)
ramps the generator, holds the level, judges it with `lkswarm.capacity.slo`, and reports the
level's verdict back. The loop is::

    search = Search(start=10, maximum=3000)
    while (planned := search.next_level()) is not None:
        if planned.fresh:
            tear_down_to_an_empty_server()
        verdict = measure(planned.participants, phase=planned.phase)
        search.record(planned.participants, verdict)
    report(search.lower, search.upper, search.stopped_because)

The search runs in phases (``shared/notes/capacity.md`` §2.3 and §6, after FD.io CSIT MLRsearch and
jmeter-mcp's ``find_breaking_point``):

1. **bracket**: start at `start` and grow geometrically (``ceil(level * growth)``, at least
   `min_step` more) or by a fixed `step`, capped at `maximum`, keeping the population that is up
   (``fresh`` False). The last PASS is the lower bound L; the first level that does not pass is the
   upper bound U. A PASS at `maximum` ends the search with U None ("max passed", a censored result).
   A failing first level ends it with L None ("first level failed").
2. **bisect**: probe the middle of [L, U), rounded to `granularity`, until ``(U - L) / L <= width``,
   or U - L is a single step (`granularity`, or `min_step` when larger), or `max_probes` probes were
   made. A probe below the population that is up (always so after a FAIL) is ``fresh``: an
   overloaded population may not recover, so the caller tears down to an empty server and ramps again.
   Going up from a PASS keeps the population.
3. **confirm** (only with ``confirm=True``): a fresh ramp to L at full hold. If it fails, U becomes L,
   L falls back to the best earlier PASS below it, and that one is confirmed in turn (once).

Verdicts: INCONCLUSIVE reaching `record` counts as FAIL (the caller extends the hold first; what is
still unsure after ``--max-hold`` is not capacity). GENERATOR_BOUND ends the search at once
("generator-bound": L is then only a lower bound, the load generator gave out first). ABORTED (an
error burst, a server restart) ends it with U at that level ("aborted").

Levels are multiples of `granularity` (whole rooms when growing rooms of N participants): `start`
is rounded up to one, `maximum` down, and a level is never below one granule.

Calling `next_level` again before `record` returns the same plan; `record` must name the planned level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lkswarm.capacity.schema import LevelVerdict
from lkswarm.errors import ConfigError

Phase = Literal["bracket", "bisect", "confirm"]


@dataclass(frozen=True)
class Planned:
    """The next level to measure."""

    participants: int
    phase: Phase
    fresh: bool  # tear down to an empty server first: the first level, or below the population that is up


class Search:
    """Bracket-and-bisect over participant counts; see the module docstring."""

    def __init__(
        self,
        start: int,
        maximum: int,
        *,
        growth: float | None = 1.5,
        step: int | None = None,
        width: float = 0.05,
        min_step: int = 1,
        max_probes: int = 6,
        granularity: int = 1,
        confirm: bool = False,
    ) -> None:
        if granularity < 1 or min_step < 1 or max_probes < 0 or width < 0:
            raise ConfigError("capacity search: granularity and min_step must be >= 1, max_probes and width >= 0")
        if step is None and (growth is None or growth <= 1.0):
            raise ConfigError("capacity search: give --growth above 1 or a --step")
        if step is not None and step < 1:
            raise ConfigError(f"capacity search: --step must be >= 1, got {step}")
        self.start = max(granularity, math.ceil(start / granularity) * granularity)
        self.maximum = maximum // granularity * granularity
        if self.start < 1 or self.maximum < self.start:
            raise ConfigError(
                f"capacity search: --max {maximum} is below --start {start} (in multiples of {granularity})"
            )
        self.growth, self.step, self.width = growth, step, width
        self.min_step, self.max_probes, self.granularity = min_step, max_probes, granularity
        self.confirm = confirm
        self._lower: int | None = None
        self._upper: int | None = None
        self._population = 0  # participants up on the server now (0: empty, nothing ramped yet)
        self._probes = 0  # bisect probes made
        self._confirm_retries = 1
        self._phase: Phase = "bracket"
        self._pending: Planned | None = self._plan(self.start, "bracket")
        self._stopped_because = ""
        self._stopped_before_confirm = ""
        self._history: list[tuple[Planned, LevelVerdict]] = []

    # -- what the caller reads -------------------------------------------------------------

    @property
    def lower(self) -> int | None:
        """The last level that passed (the capacity found), or None."""
        return self._lower

    @property
    def upper(self) -> int | None:
        """The level that did not pass above `lower`, or None (none failed: max passed, or generator-bound)."""
        return self._upper

    @property
    def done(self) -> bool:
        return self._pending is None

    @property
    def stopped_because(self) -> str:
        """'' while running; then "width reached", "max passed", "first level failed", "generator-bound",
        "probes exhausted", "aborted", "confirm failed", "error" or "stopped" (the run ended first)."""
        return self._stopped_because

    @property
    def probes(self) -> int:
        """Bisect probes made so far."""
        return self._probes

    @property
    def history(self) -> tuple[tuple[Planned, LevelVerdict], ...]:
        """Every level measured, in order, with its verdict."""
        return tuple(self._history)

    def next_level(self) -> Planned | None:
        """The level to measure next, or None when the search is done."""
        return self._pending

    def stop_on_error(self) -> None:
        """Ends the search now because its driver failed: the levels recorded so far stand, and the interval
        is only what they showed (``stopped_because`` is "error")."""
        self._pending = None
        self._stopped_because = "error"

    def stop_early(self) -> None:
        """Ends the search because the run under it ended first (a stop signal, its time bound): the levels
        recorded so far stand, and the interval is only what they showed (``stopped_because`` is "stopped")."""
        if self._pending is not None:
            self._pending = None
            self._stopped_because = "stopped"

    # -- what the caller tells ---------------------------------------------------------------

    def record(self, participants: int, verdict: LevelVerdict) -> None:
        """The verdict of the level `next_level` planned."""
        planned = self._pending
        if planned is None:
            raise RuntimeError("capacity search: record() after the search is done")
        if participants != planned.participants:
            raise ValueError(f"capacity search: recorded {participants} participants, planned {planned.participants}")
        self._history.append((planned, verdict))
        self._population = participants
        self._pending = None
        if verdict == "GENERATOR_BOUND":
            self._finish("generator-bound")
        elif verdict == "ABORTED":
            self._upper = participants
            self._finish("aborted")
        elif planned.phase == "confirm":
            self._after_confirm(participants, passed=verdict == "PASS")
        elif verdict == "PASS":
            self._after_pass(participants, planned.phase)
        else:  # FAIL, or INCONCLUSIVE after the hold extension: conservative
            self._after_fail(participants)

    # -- the rules -----------------------------------------------------------------------------

    def _after_pass(self, level: int, phase: Phase) -> None:
        self._lower = level
        if phase == "bracket":
            if level >= self.maximum:
                self._finish("max passed")
            else:
                self._pending = self._plan(self._grow(level), "bracket")
        else:
            self._bisect_or_finish()

    def _after_fail(self, level: int) -> None:
        # In the bracket or in bisection alike, the interval narrows from above.
        self._upper = level
        if self._lower is None:
            # Only the first bracket level can fail with no PASS below it.
            self._finish("first level failed")
        else:
            self._bisect_or_finish()

    def _after_confirm(self, level: int, *, passed: bool) -> None:
        if passed:
            self._finish(self._stopped_before_confirm)
            return
        self._upper = level
        earlier = [p.participants for p, v in self._history if v == "PASS" and p.participants < level]
        self._lower = max(earlier) if earlier else None
        if self._lower is not None and self._confirm_retries > 0:
            self._confirm_retries -= 1
            self._pending = self._plan(self._lower, "confirm")
        else:
            self._finish("confirm failed")

    def _bisect_or_finish(self) -> None:
        lower, upper = self._lower, self._upper
        assert lower is not None and upper is not None  # bisection runs only inside a bracket
        if upper - lower <= max(self.granularity, self.min_step) or (upper - lower) / lower <= self.width:
            self._finish("width reached")
        elif self._probes >= self.max_probes:
            self._finish("probes exhausted")
        else:
            self._probes += 1
            self._pending = self._plan(self._middle(lower, upper), "bisect")

    def _finish(self, reason: str) -> None:
        # The confirmation re-measures L from an empty server at full hold; it only makes sense
        # after a normal end (not when the generator or an abort stopped the search).
        normal = reason in ("width reached", "probes exhausted", "max passed")
        if self.confirm and normal and self._lower is not None and self._phase != "confirm":
            self._phase = "confirm"
            self._stopped_before_confirm = reason
            self._pending = self._plan(self._lower, "confirm")
            return
        self._pending = None
        self._stopped_because = reason

    # -- arithmetic ------------------------------------------------------------------------------

    def _plan(self, level: int, phase: Phase) -> Planned:
        # Fresh: nothing is up yet, the level is below what is up (ramping down from an overload
        # is not the same state as ramping up), or a confirmation (always from an empty server).
        fresh = self._population == 0 or level < self._population or phase == "confirm"
        return Planned(participants=level, phase=phase, fresh=fresh)

    def _grow(self, level: int) -> int:
        if self.step is not None:
            target = level + max(self.step, self.min_step)
        else:
            assert self.growth is not None
            target = max(math.ceil(level * self.growth), level + self.min_step)
        target = math.ceil(target / self.granularity) * self.granularity
        return min(target, self.maximum)

    def _middle(self, lower: int, upper: int) -> int:
        # Round half up to a multiple of the granularity, then keep it strictly inside (L, U):
        # both ends are multiples and U - L >= 2 granules here, so such a multiple exists.
        g = self.granularity
        middle = math.floor((lower + upper) / (2 * g) + 0.5) * g
        return min(max(middle, lower + g), upper - g)
