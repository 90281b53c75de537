"""Which signaling path each participant takes: ``/rtc/v1`` (single PeerConnection), ``/rtc`` (two), or
``auto`` (``/rtc/v1``, falling back to ``/rtc`` on a 404 as today's SDKs do), alone or as a weighted mix.

A mix such as ``v1:70,v0:30`` models a client population. Paths are dealt over the global arrival index by a
smooth weighted round-robin (nginx's), so any 10 consecutive arrivals of a 70/30 mix hold 7 and 3, the
choice of a participant never depends on which worker or room it lands in, and a churn replacement (a new
index) follows the same mix.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

SignalPath = Literal["v1", "v0", "auto"]
PATHS: tuple[SignalPath, ...] = ("v1", "v0", "auto")
DEFAULT_SIGNAL_PATH = "auto"  # what today's SDKs do (JS: singlePeerConnection defaults to true, 404 falls back)
MAX_CYCLE = 10_000  # the reduced weights' sum: the round-robin's table


@functools.lru_cache(maxsize=16)  # every participant's driver asks (its path), with the run's one text
def parse_signal_path(text: str) -> tuple[tuple[SignalPath, int], ...]:
    """``v1``, ``v0``, ``auto`` or a mix ``v1:70,v0:30`` -> ((path, weight), ...); ValueError names the bad part."""
    parts = [part.strip() for part in text.split(",")]
    weights: dict[SignalPath, int] = {}
    for part in parts:
        name, sep, weight_text = part.partition(":")
        name = name.strip()
        if name not in PATHS:
            raise ValueError(f"signal path {name!r} in {text!r}: use v1, v0, auto or a mix like v1:70,v0:30")
        path: SignalPath = name  # narrowed by the check against PATHS above
        if path in weights:
            raise ValueError(f"signal path {path} appears twice in {text!r}")
        if not sep:
            if len(parts) > 1:
                raise ValueError(f"signal path {path} in the mix {text!r} needs a weight, e.g. {path}:50")
            weight = 1
        else:
            try:
                weight = int(weight_text)
            except ValueError:
                raise ValueError(f"signal path weight {weight_text!r} in {text!r} is not a whole number") from None
            if weight <= 0:
                raise ValueError(f"signal path weight of {path} in {text!r} must be > 0")
        weights[path] = weight
    divisor = functools.reduce(math.gcd, weights.values())
    reduced = tuple((path, weight // divisor) for path, weight in weights.items())
    if sum(weight for _, weight in reduced) > MAX_CYCLE:
        raise ValueError(f"signal path weights in {text!r} are too fine: their reduced sum must be <= {MAX_CYCLE}")
    return reduced


@functools.lru_cache(maxsize=16)
def _cycle(weights: tuple[tuple[SignalPath, int], ...]) -> tuple[SignalPath, ...]:
    """One period of the smooth weighted round-robin: each path as often as its weight, evenly spread."""
    total = sum(weight for _, weight in weights)
    current = [0] * len(weights)
    order: list[SignalPath] = []
    for _ in range(total):
        for k, (_, weight) in enumerate(weights):
            current[k] += weight
        best = max(range(len(weights)), key=lambda k: current[k])
        current[best] -= total
        order.append(weights[best][0])
    return tuple(order)


def signal_path_for(index: int, weights: tuple[tuple[SignalPath, int], ...]) -> SignalPath:
    """The path of the participant at global arrival ``index``."""
    cycle = _cycle(weights)
    return cycle[index % len(cycle)]


def describe(weights: tuple[tuple[SignalPath, int], ...]) -> str:
    """The mix as the user writes it: ``auto``, or ``v1:7,v0:3`` (reduced)."""
    if len(weights) == 1:
        return weights[0][0]
    return ",".join(f"{path}:{weight}" for path, weight in weights)


__all__ = ["DEFAULT_SIGNAL_PATH", "PATHS", "SignalPath", "describe", "parse_signal_path", "signal_path_for"]
