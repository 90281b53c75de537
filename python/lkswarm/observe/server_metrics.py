"""The server's own view of a run, from its Prometheus endpoint: what it forwarded, lost, NACKed and used.

livekit-server v1.13.5 serves ``/metrics`` when its config has ``prometheus: {port}``
(the embedded server always does; a remote one is read with ``--server-metrics URL``).
A run scrapes it before and after; the report's ``server`` section is the difference.
LiveKit exports no CPU load of its own: the server's cores are the rate of the
standard ``process_cpu_seconds_total``. What could not be read is said, never guessed.

The server folds each participant's packet counts into these counters every
few seconds, not per packet: a 15 s run's ``packets_out`` read about 70 % of
what its subscribers received. Compare rates over runs of a minute or more,
and the server's loss and NACK figures as shares, not the last seconds' totals.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
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
    return out
