"""``--signal-path`` against the real livekit-server v1.13.5, through an HTTP relay that shows each upgrade.

Signal-level: the ``/rtc/v1`` join, ``auto``'s fallback when ``/rtc/v1`` answers 404, a mix reported by
path, a corrupt ``join_request`` (400 with the server's words) and ``v1`` against a server without the path
(a one-line usage error before the run), and a room check at the end answered by a gateway's page instead of
Twirp's JSON (a reason in the report, no participant lost). The single-PC media tests are in
test_single_pc_integration.py.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from helpers import LKSWARM, assert_outcomes_reconcile, run_engine
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from relays import HttpRelay

pytestmark = pytest.mark.integration


def signal_config(url: str, **overrides: object) -> RunConfig:
    fields: dict[str, object] = dict(
        url=url, rooms=2, participants=5, rate=50, duration_s=3, signal_only=True, run_tag=os.urandom(3).hex()
    )
    fields.update(overrides)
    return RunConfig(**fields)  # type: ignore[arg-type]


def identity_of(request_line: str) -> str:
    """The participant of an upgrade, from its token's subject (the relay logs the request line only)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request_line.split(" ")[1]).query)
    payload = query["access_token"][0].split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def test_v1_joins_only_through_rtc_v1(livekit_server: LocalServer, credentials: Credentials) -> None:
    with HttpRelay(livekit_server.port) as relay:
        report = run_engine(signal_config(relay.url, signal_path="v1"), credentials, relay.url)
    assert report["participants"]["outcomes"]["completed"] == 10
    assert_outcomes_reconcile(report)
    upgrades = [line for line in relay.request_lines if "/rtc" in line]
    assert len(upgrades) == 10
    assert all(line.startswith("GET /rtc/v1?access_token=") and "join_request=" in line for line in upgrades)
    paths = report["signal"]["paths"]
    assert paths["v1"]["participants"] == 10 and paths["v1"]["connects"] == 10
    assert paths["v0"]["participants"] == 0 and paths["fallbacks"] == 0


def test_auto_falls_back_to_rtc_when_v1_answers_404(livekit_server: LocalServer, credentials: Credentials) -> None:
    with HttpRelay(livekit_server.port, deny_v1=True) as relay:
        report = run_engine(signal_config(relay.url), credentials, relay.url)
    assert report["participants"]["outcomes"]["completed"] == 10
    paths = report["signal"]["paths"]
    assert paths["fallbacks"] == 10
    assert paths["v0"]["participants"] == 10 and paths["v1"]["participants"] == 0
    by_identity: dict[str, list[str]] = collections.defaultdict(list)
    for line in relay.request_lines:
        if "/rtc" not in line:
            continue  # the room check's ListParticipants
        by_identity[identity_of(line)].append(line.split(" ")[1].split("?")[0])
    assert len(by_identity) == 10
    assert all(targets == ["/rtc/v1", "/rtc"] for targets in by_identity.values()), by_identity


def test_a_mix_reports_each_path(livekit_server: LocalServer, credentials: Credentials) -> None:
    url = livekit_server.url
    report = run_engine(signal_config(url, signal_path="v1:50,v0:50", rooms=1, participants=10), credentials, url)
    assert report["participants"]["outcomes"]["completed"] == 10
    paths = report["signal"]["paths"]
    assert paths["v1"]["outcomes"]["completed"] == 5 and paths["v0"]["outcomes"]["completed"] == 5
    latency = report["latency_ms"]
    assert latency["join_response_v1"]["count"] == 5 and latency["join_response_v0"]["count"] == 5
    assert latency["join_response"]["count"] == 10


def test_a_corrupt_join_request_is_a_400_with_the_servers_words(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    with HttpRelay(livekit_server.port, join_request="AAAA") as relay:
        report = run_engine(signal_config(relay.url, signal_path="v1", rooms=1, participants=2), credentials, relay.url)
    participants = report["participants"]
    assert participants["failures"] == {"http_400": 2}
    assert "cannot unmarshal wrapped join request" in participants["failure_details"]["failed:http_400"]


def test_v1_against_a_server_without_it_is_a_one_line_usage_error(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    with HttpRelay(livekit_server.port, deny_v1=True) as relay:
        out = subprocess.run(
            [*LKSWARM, "run", "--url", relay.url, "--signal-only", "--signal-path", "v1", "--duration", "2"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no /rtc/v1" in lines[0] and "--signal-path auto or v0" in lines[0], lines
    assert not any(line.startswith("GET /rtc/v1?") for line in relay.request_lines)  # no participant tried


GATEWAY_PAGE = b"<html><body>502 Bad Gateway</body></html>"
GATEWAY_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
    len(GATEWAY_PAGE),
    GATEWAY_PAGE,
)


def test_a_room_check_answered_by_a_gateway_page_costs_no_participant_and_no_report(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    """The room check at the end reads ListParticipants; a 200 whose body is not Twirp's JSON (a proxy's page)
    used to escape the run as a JSONDecodeError after every outcome was decided, and the run lost its report."""
    with HttpRelay(livekit_server.port, twirp_answer=GATEWAY_ANSWER) as relay:
        report = run_engine(signal_config(relay.url, rooms=1, participants=4, duration_s=2), credentials, relay.url)
    assert report["participants"]["outcomes"]["completed"] == 4, report["participants"]
    assert_outcomes_reconcile(report)
    error = report["room_check"]["error"]
    assert error.startswith("bad_response: ListParticipants: not JSON: '<html>"), error
    assert any(w.startswith("the room check at the end could not run: bad_response") for w in report["warnings"])
    assert any("/twirp/livekit.RoomService/ListParticipants" in line for line in relay.request_lines)
