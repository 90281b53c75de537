"""Data-load options against the real livekit-server v1.13.5: bursts, slow readers, and the reliable
resend after a resume (issue #21).

- Bursts: publishers add N messages back to back every period; every one is delivered (reliable).
- Slow readers: the last seat of each room stops draining its data channels for a while; its latency
  (``data_e2e_slow_readers``) shows the pauses, the others' (``data_e2e``) is reported apart, and
  nothing in lkswarm grows without bound (the held bytes are capped).
- Resume: a reconnect storm on a room of reliable data publishers; each resume asks the server's
  ``last_message_seq`` and writes again what it lacks, and receivers see no duplicate and no gap.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from helpers import assert_outcomes_reconcile, run_engine
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig

pytestmark = pytest.mark.integration


def config(url: str, **overrides: Any) -> RunConfig:
    fields: dict[str, Any] = dict(
        url=url,
        rooms=1,
        participants=6,
        rate=20,
        duration_s=20,
        data_publishers=2,
        data_rate=20,
        data_size=300,
        run_tag=os.urandom(3).hex(),
    )
    fields.update(overrides)
    return RunConfig(**fields)


def test_bursts_are_sent_back_to_back_and_all_delivered(livekit_server: LocalServer, credentials: Credentials) -> None:
    cfg = config(livekit_server.url, data_rate=2, data_burst=50, data_burst_every_s=4.0)
    report = run_engine(cfg, credentials, livekit_server.url)
    assert report["participants"]["outcomes"]["completed"] == 6, report["participants"]
    data = report["data"]
    # Each publisher's channel is open for most of the 20 s: about 4 bursts of 50, on top of 2 msg/s.
    assert 2 * 3 * 50 <= data["burst_messages"] <= 2 * 5 * 50, data
    assert data["messages_sent"] >= data["burst_messages"] + 2 * 2 * 15, data
    assert data["delivery_ratio"] == 1.0 and data["duplicates"] == 0 and data["messages_missing"] == 0, data
    assert data["messages_received"] >= 5 * data["messages_sent"] * 0.95, data


def test_a_slow_reader_is_measured_apart_and_stays_bounded(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    cfg = config(
        livekit_server.url,
        duration_s=24,
        data_rate=50,
        data_slow_readers=1,
        data_slow_pause_s=2.0,
        data_slow_every_s=6.0,
    )
    report = run_engine(cfg, credentials, livekit_server.url)
    assert report["participants"]["outcomes"]["completed"] == 6, report["participants"]
    assert_outcomes_reconcile(report)
    data = report["data"]
    slow = data["slow_readers"]
    # Joined in the first second or so, the reader pauses at about 6, 12 and 18 s.
    assert slow["readers"] == 1 and 2 <= slow["pauses"] <= 4, slow
    assert slow["held_datagrams"] > 0 and slow["dropped_datagrams"] == 0, slow
    assert 0 < slow["max_held_bytes"] <= 4 * 1024 * 1024, slow
    latency = report["latency_ms"]
    slow_e2e, others = latency["data_e2e_slow_readers"], latency["data_e2e"]
    # What the slow reader got during a pause arrived at its end: up to 2 s late.
    assert slow_e2e["count"] > 0 and slow_e2e["max"] >= 1000, slow_e2e
    assert others["count"] > 0 and others["p50"] < 100, others
    # Everyone else still gets every message of a reliable channel: what is missing is the slow reader's.
    assert data["messages_missing"] == slow["messages_missing"], (data, slow)
    assert slow["messages_received"] > 0, slow


def test_a_resume_resends_what_the_server_lacks_without_duplicates(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    cfg = config(livekit_server.url, reconnect_storm_at_s=8.0, reconnect_storm_mode="resume")
    report = run_engine(cfg, credentials, livekit_server.url)
    assert report["participants"]["outcomes"]["completed"] == 6, report["participants"]
    signal = report["signal"]
    assert signal["storm_dropped"] == signal["resumes_succeeded"] == 6, signal
    data = report["data"]
    resend = data["resend"]
    assert resend["resumes"] == 2, resend  # both publishers asked after their resume
    assert resend["resend_unavailable"] == 0, resend
    # The server keeps the highest sequence it saw and drops anything at or below it: receivers never see
    # a duplicate, and no message is missing across the resume.
    assert data["duplicates"] == 0 and data["messages_missing"] == 0 and data["delivery_ratio"] == 1.0, data
