"""The server's own view of a run, from its Prometheus endpoint: what it forwarded, lost, NACKed and used.

livekit-server v1.13.5 serves ``/metrics`` when its config has ``prometheus: {port}``
(the embedded server always does; a remote one is read with ``--server-metrics URL``).
A run scrapes it before and after; the report's ``server`` section is the difference.
LiveKit exports no CPU load of its own: the server's cores are the rate of the
standard ``process_cpu_seconds_total``. What could not be read is said, never guessed.

The subscribers' side, as the server sees it, comes from their RTCP receiver reports:
each down track's stats window (every 5 s) records the loss the subscriber reported
(``livekit_packet_loss_*``, direction ``outgoing``) and the RTT the server measured
from the report's LSR and DLSR (``livekit_rtt_ms``, outgoing; none is recorded until
a report answers a sender report, nor while the RTT rounds to 0 ms). Every 5 s the
server also rates each ACTIVE participant by its worst track (``livekit_quality_*``,
no direction: publishers too).

The server folds each participant's packet counts into these counters every
few seconds, not per packet: a 15 s run's ``packets_out`` read about 70 % of
what its subscribers received. Compare rates over runs of a minute or more,
and the server's loss and NACK figures as shares, not the last seconds' totals.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

SCRAPE_TIMEOUT_S = 3.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# (report key, metric, labels that must match): each is summed over every other label (country, node...).
SERIES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("packets_in", "livekit_packet_total", {"direction": "incoming"}),
    ("packets_out", "livekit_packet_total", {"direction": "outgoing"}),
    ("packets_out_retransmit", "livekit_packet_total", {"direction": "outgoing", "transmission": "retransmit"}),
    ("bytes_in", "livekit_packet_bytes", {"direction": "incoming"}),
    ("bytes_out", "livekit_packet_bytes", {"direction": "outgoing"}),
    ("packets_lost_in", "livekit_packet_loss_total", {"direction": "incoming"}),
    ("packets_lost_out", "livekit_packet_loss_total", {"direction": "outgoing"}),
    ("nacks_in", "livekit_nack_total", {"direction": "incoming"}),
    ("nacks_out", "livekit_nack_total", {"direction": "outgoing"}),
    ("plis_in", "livekit_pli_total", {"direction": "incoming"}),
    ("plis_out", "livekit_pli_total", {"direction": "outgoing"}),
    ("cpu_s", "process_cpu_seconds_total", {}),
)
# livekit_quality_rating's bucket bounds are ConnectionQuality values: le="0" POOR, "1" GOOD, "2" EXCELLENT, +Inf LOST.
QUALITY_RATING_BUCKETS = (("poor", "0"), ("good", "1"), ("excellent", "2"), ("lost", "+Inf"))
GAUGES: tuple[tuple[str, str], ...] = (
    ("rss_bytes", "process_resident_memory_bytes"),
    ("participants", "livekit_participant_total"),
    ("rooms", "livekit_room_total"),
)


@dataclass(slots=True)
class Scrape:
    """One read of ``/metrics``: (metric name, labels) -> value."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def total(self, name: str, match: dict[str, str]) -> float:
        return sum(
            value
            for sample_name, labels, value in self.samples
            if sample_name == name and all(labels.get(k) == v for k, v in match.items())
        )

    def has(self, name: str) -> bool:
        return any(sample_name == name for sample_name, _, _ in self.samples)

    def bucket(self, name: str, le: str, match: dict[str, str]) -> float:
        """A histogram's cumulative count of observations at most ``le`` (its ``_bucket`` series)."""
        return self.total(f"{name}_bucket", {**match, "le": le})


def parse_exposition(text: str) -> Scrape:
    """The samples of a Prometheus text exposition (comments and malformed lines are skipped)."""
    scrape = Scrape()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if math.isfinite(value):
            labels = dict(_LABEL.findall(match.group(2) or ""))
            scrape.samples.append((match.group(1), labels, value))
    return scrape


def scrape(url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> Scrape | str:
    """The endpoint's samples, or why they could not be read (one line)."""
    # urllib.request brings http.client and email (about 10 ms of start-up): imported when first used.
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read(16 * 1024 * 1024).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'reason', None) or exc}"
    found = parse_exposition(text)
    if not found.has("process_cpu_seconds_total") and not found.has("livekit_participant_total"):
        return f"{url}: no livekit-server metrics there"
    return found


def server_section(before: Scrape | str, after: Scrape | str, wall_s: float) -> dict[str, Any]:
    """The report's ``server`` section: what the server counted between the two scrapes."""
    for scraped in (before, after):
        if isinstance(scraped, str):
            return {"available": False, "reason": scraped}
    assert isinstance(before, Scrape) and isinstance(after, Scrape)
    out: dict[str, Any] = {"available": True, "wall_s": round(wall_s, 3)}
    for key, name, match in SERIES:
        out[key] = round(max(0.0, after.total(name, match) - before.total(name, match)), 3)
    for key, name in GAUGES:
        out[key] = after.total(name, {})
    out["cores"] = round(out["cpu_s"] / wall_s, 3) if wall_s > 0 else 0.0
    sent = out["packets_out"]
    out["loss_in_ratio"] = (
        round(out["packets_lost_in"] / (out["packets_in"] + out["packets_lost_in"]), 6) if out["packets_in"] else 0.0
    )
    out["retransmit_share"] = round(out["packets_out_retransmit"] / sent, 6) if sent else 0.0
    out["loss_out_ratio"] = round(out["packets_lost_out"] / sent, 6) if sent else 0.0
    out.update(_subscriber_health(before, after))
    return out


def _gained(before: Scrape, after: Scrape, name: str, match: dict[str, str]) -> float:
    return max(0.0, after.total(name, match) - before.total(name, match))


def _subscriber_health(before: Scrape, after: Scrape) -> dict[str, Any]:
    """The RTT the server measured to its subscribers and the quality it rated participants, between the scrapes."""
    outgoing = {"direction": "outgoing"}
    rtt_samples = _gained(before, after, "livekit_rtt_ms_count", outgoing)
    score_samples = _gained(before, after, "livekit_quality_score_count", {})
    ratings: dict[str, int] = {}
    below = 0.0  # the cumulative count of the bucket below
    for name, le in QUALITY_RATING_BUCKETS:
        upto = after.bucket("livekit_quality_rating", le, {}) - before.bucket("livekit_quality_rating", le, {})
        ratings[name] = max(0, round(upto - below))
        below = upto
    return {
        "rtt_out_samples": round(rtt_samples),
        "rtt_out_ms_mean": round(_gained(before, after, "livekit_rtt_ms_sum", outgoing) / rtt_samples, 3)
        if rtt_samples
        else None,
        "quality_samples": ratings,
        "quality_score_mean": round(_gained(before, after, "livekit_quality_score_sum", {}) / score_samples, 4)
        if score_samples
        else None,
    }
