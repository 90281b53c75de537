"""Probe impairment (lkswarm.impairment, lkswarm.probe.netns): parsing, tc commands, a real impaired run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_outcomes_reconcile, run_cli
from lkswarm.app.server import server_config
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.fields import FieldError
from lkswarm.impairment import Impairment, parse_impairment, qdisc_commands
from lkswarm.probe.netns import _class_stats, _qdisc_stats, _subnet_prefix, unsupported_reason

# -- parsing and commands (no sockets) -----------------------------------------------------------------


def test_parse_every_part_with_units() -> None:
    impairment = parse_impairment("loss=2.5%, delay=40ms,jitter=0.01s,rate=1.5mbit")
    assert impairment == Impairment(loss_pct=2.5, delay_ms=40.0, jitter_ms=10.0, rate_kbit=1500.0)
    assert impairment.needs_netem
    assert parse_impairment("rate=300kbit") == Impairment(rate_kbit=300.0)
    assert not parse_impairment("rate=300kbit").needs_netem
    assert parse_impairment("LOSS=1") == Impairment(loss_pct=1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("loss=2", None),
        ("delay=40", "delay needs a unit"),
        ("rate=100", "rate needs a unit"),
        ("rate=4kbit", "at least 8kbit"),
        ("loss=120%", "at most 100%"),
        ("loss=1ms", "loss is a percentage"),
        ("jitter=5ms", "jitter needs a delay"),
        ("delay=5ms,delay=6ms", "given twice"),
        ("latency=5ms", "bad impairment 'latency=5ms'"),
        ("", "bad impairment ''"),
    ],
)
def test_parse_refuses_bad_parts(text: str, message: str | None) -> None:
    if message is None:
        parse_impairment(text)  # a bare loss number is a percentage
        return
    with pytest.raises(ValueError, match=message):
        parse_impairment(text)


def test_qdisc_commands_netem_alone_is_shared() -> None:
    assert qdisc_commands("v0", Impairment(), ["10.0.0.2"], "dst") == []
    netem = qdisc_commands("v0", Impairment(loss_pct=1, delay_ms=40, jitter_ms=5), ["10.0.0.2", "10.0.0.3"], "dst")
    head = ["tc", "qdisc", "add", "dev", "v0", "root", "handle", "1:", "netem"]
    assert netem == [[*head, "delay", "40ms", "5ms", "loss", "1%"]]  # per packet: one netem serves every probe


def test_qdisc_commands_give_each_probe_its_own_rate() -> None:
    commands = qdisc_commands("v0", Impairment(rate_kbit=8000), ["10.0.0.2", "10.0.0.3"], "src")
    htb, *per_probe = commands
    assert htb == ["tc", "qdisc", "add", "dev", "v0", "root", "handle", "2:", "htb"]
    assert len(per_probe) == 6  # a class, its queue and its filter, per probe
    for k, (klass, queue, match) in enumerate(zip(per_probe[0::3], per_probe[1::3], per_probe[2::3], strict=True)):
        classid = f"2:{0x10 + k:x}"
        assert klass[:9] == ["tc", "class", "add", "dev", "v0", "parent", "2:", "classid", classid]
        assert klass[9:] == ["htb", "rate", "8000kbit", "ceil", "8000kbit", "burst", "20000", "cburst", "20000"]
        assert queue == ["tc", "qdisc", "add", "dev", "v0", "parent", classid, "bfifo", "limit", "220000"]  # 200+20 ms
        assert match[-7:] == ["u32", "match", "ip", "src", f"10.0.0.{2 + k}/32", "flowid", classid]
    first, second, *_ = qdisc_commands("v0", Impairment(delay_ms=10, rate_kbit=64), ["10.0.0.2"], "dst")
    assert first[-2:] == ["delay", "10ms"]
    assert second[5:] == ["parent", "1:", "handle", "2:", "htb"]  # the rate below netem
    assert "3200" in qdisc_commands("v0", Impairment(rate_kbit=64), ["10.0.0.2"], "dst")[1]  # the minimum burst


def test_qdisc_stats_take_the_roots_drops_once() -> None:
    text = (
        "qdisc netem 1: root refcnt 2 limit 1000 delay 40ms\n"
        " Sent 120000 bytes 400 pkt (dropped 20, overlimits 0 requeues 0)\n"
        "qdisc htb 2: parent 1: r2q 10 default 0 direct_packets_stat 3\n"
        " Sent 110000 bytes 380 pkt (dropped 13, overlimits 250 requeues 0)\n"
        "qdisc bfifo 8001: parent 2:10 limit 9450b\n"
        " Sent 110000 bytes 380 pkt (dropped 13, overlimits 0 requeues 0)\n"
    )
    # netem counts its own losses and the packets its child refused: 7 lost + 13 over the rate.
    assert _qdisc_stats(text) == {"bytes": 120000, "packets": 400, "dropped": 20, "overlimits": 250}
    assert _qdisc_stats("") == {"bytes": 0, "packets": 0, "dropped": 0, "overlimits": 0}


def test_class_stats_are_per_probe() -> None:
    text = (
        "class htb 2:11 root leaf 8097: prio 0 rate 250Kbit ceil 250Kbit burst 3200b cburst 3200b \n"
        " Sent 5210 bytes 5 pkt (dropped 0, overlimits 2 requeues 0) \n"
        " backlog 0b 0p requeues 0\n\n"
        "class htb 2:10 root leaf 8096: prio 0 rate 250Kbit ceil 250Kbit burst 3200b cburst 3200b \n"
        " Sent 36470 bytes 35 pkt (dropped 434, overlimits 32 requeues 0) \n"
    )
    assert _class_stats(text) == {
        0: {"bytes": 36470, "packets": 35, "dropped": 434, "overlimits": 32},
        1: {"bytes": 5210, "packets": 5, "dropped": 0, "overlimits": 2},
    }


def test_each_probe_gets_an_address_in_a_subnet_that_fits() -> None:
    assert _subnet_prefix(1) == 30 and _subnet_prefix(2) == 29 and _subnet_prefix(5) == 29  # + the gateway
    assert _subnet_prefix(6) == 28 and _subnet_prefix(253) == 24
    with pytest.raises(ValueError, match="too many"):
        _subnet_prefix(70_000)


def test_config_validates_the_impairment() -> None:
    assert RunConfig(probes=1, probe_impair="delay=20ms").probe_impair == "delay=20ms"
    with pytest.raises(FieldError, match="rate needs a unit"):
        RunConfig(probes=1, probe_impair="rate=5")


def test_server_config_media_on_one_interface() -> None:
    credentials = Credentials("k", "s" * 32)
    plain = server_config(credentials, 7880, 7882)
    # Loopback only: a second interface's socket would send a run's media from an unadvertised address.
    assert plain["rtc"]["node_ip"] == "127.0.0.1" and plain["rtc"]["interfaces"] == {"includes": ["lo"]}
    impaired = server_config(credentials, 7880, 7882, ("lk1r", "10.213.1.1"))
    rtc = impaired["rtc"]
    assert rtc["node_ip"] == "10.213.1.1" and rtc["interfaces"] == {"includes": ["lk1r"]}
    assert rtc["enable_loopback_candidate"] is False and rtc["udp_port"] == 7882


# -- usage errors (refused before anything starts) ------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "s" * 32}
    command = [sys.executable, "-m", "lkswarm", "run", "--quiet", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--probe-impair", "loss=2%"], "this run has no probes"),
        (["--probes", "1", "--probe-impair", "loss=2%", "--url", "ws://127.0.0.1:9"], "needs the embedded server"),
        (["--probes", "1", "--probe-impair", "rate=fast"], "bad impairment 'rate=fast'"),
    ],
)
def test_probe_impair_usage_errors_are_one_line(args: list[str], message: str) -> None:
    done = _cli(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


# -- a real impaired run (root and namespaces needed) --------------------------------------------------

RATE = Impairment(rate_kbit=250)
DELAY = Impairment(delay_ms=60)


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout


@pytest.mark.skipif(unsupported_reason(RATE) is not None, reason=f"probe impairment: {unsupported_reason(RATE)}")
@pytest.mark.integration
def test_rate_limited_probes_suffer_and_the_light_tier_does_not(credentials: Credentials, tmp_path: Path) -> None:
    """250 kbit/s each way for each probe: its own link drops and queues; everyone else is on loopback."""
    args = ["--participants", "6", "--probes", "2", "--audio-publishers", "1", "--video-publishers", "1"]
    args += ["--rate", "10", "--duration", "25s", "--probe-impair", "rate=250kbit"]
    code, report, stderr = run_cli(args, credentials, tmp_path, timeout_s=150)
    assert code == 0, stderr
    assert_outcomes_reconcile(report)
    assert report["participants"]["active_at_end"] == 6, report["participants"]
    probes = report["probes"]
    assert probes["active_at_end"] == 2 and probes["failed"] == 0, probes
    network = probes["network"]
    assert network["impairment"]["rate_kbit"] == 250
    down, up = network["downlink"], network["uplink"]
    # The probes' media crossed the pair both ways, and the bottleneck bit: its queue overflowed.
    assert down["packets"] > 500 and up["packets"] > 500, network
    assert down["dropped"] + up["dropped"] > 0 and down["overlimits"] + up["overlimits"] > 0, network
    # Each probe has a link of its own (so one probe's video cannot starve the other's DTLS handshake),
    # and each one's downlink, carrying two videos and two audio tracks, overflowed.
    links = network["per_probe"]
    assert sorted(link["ip"] for link in links) == sorted(set(link["ip"] for link in links)) and len(links) == 2
    for link in links:
        assert link["downlink"]["packets"] > 250 and link["downlink"]["dropped"] > 0, links
        assert link["uplink"]["packets"] > 250, links
    # 250 kbit/s cannot carry what each probe receives (~500 kbit/s): loss and freezes show it.
    assert probes["video_loss_ratio"] > 0.05 or probes["freezes"] > 0, probes
    # The light tier stayed on loopback, untouched: it receives every track it should.
    media = report["media"]
    assert media["tracks_missing"] == 0, media
    assert network["namespace"] not in _namespaces(), "the run left its namespace behind"


@pytest.mark.skipif(unsupported_reason(DELAY) is not None, reason=f"probe impairment: {unsupported_reason(DELAY)}")
@pytest.mark.integration  # it starts an embedded server
def test_netem_delay_shows_in_end_to_end_latency(credentials: Credentials, tmp_path: Path) -> None:
    """60 ms each way: probe-to-probe media crosses the pair twice, so e2e p50 rises to at least 120 ms."""
    args = ["--participants", "4", "--probes", "2", "--rate", "10", "--duration", "20s"]
    args += ["--probe-impair", "delay=60ms"]
    code, report, stderr = run_cli(args, credentials, tmp_path, timeout_s=150)
    assert code == 0, stderr
    probes = report["probes"]
    assert probes["active_at_end"] == 2, probes
    e2e = report["latency_ms"]["media_e2e"]
    assert e2e["count"] >= 50 and 120 <= e2e["p50"] < 500, e2e
    assert probes["audio"]["marker_latency_ms"]["p50"] >= 120, probes["audio"]
    assert probes["network"]["downlink"]["packets"] > 0
