"""Network impairment settings (``--probe-impair``): parsing and the qdisc commands they become; pure functions.

The namespace, the veth pair and the commands' execution live in `lkswarm.probe.netns`;
this module is what a configuration may check without touching the network.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from lkswarm.errors import ConfigError

RATE_QUEUE_MS = 200  # a probe's rate-limited link queues at most this much data, then drops (a modest buffer)
MIN_RATE_BURST_BYTES = 3200
FIRST_PROBE_CLASS = 0x10  # probe k's HTB class is 2:(k + 0x10)
_PART = re.compile(r"^\s*(loss|delay|jitter|rate)\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z%]*)\s*$")
_RATE_UNITS = {"kbit": 1.0, "mbit": 1000.0, "gbit": 1_000_000.0}
_TIME_UNITS = {"ms": 1.0, "s": 1000.0}


class ImpairmentError(ConfigError):
    """The impairment cannot be set up here (not root, no namespaces, no netem): a usage error."""


@dataclass(frozen=True, slots=True)
class Impairment:
    """What each direction of the probes' link suffers."""

    loss_pct: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_kbit: float = 0.0  # 0: unlimited

    @property
    def needs_netem(self) -> bool:
        return bool(self.loss_pct or self.delay_ms or self.jitter_ms)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def parse_impairment(text: str) -> Impairment:
    """``"loss=2%,delay=40ms,jitter=10ms,rate=1mbit"`` (any subset, any order) -> `Impairment`."""
    values: dict[str, float] = {}
    for part in text.split(","):
        match = _PART.match(part.lower())
        if match is None:
            raise ValueError(f"bad impairment {part.strip()!r}: expected loss=N%, delay=Nms, jitter=Nms or rate=Nkbit")
        key, number, unit = match.group(1), float(match.group(2)), match.group(3)
        if key in values:
            raise ValueError(f"impairment {key} given twice")
        if key == "loss":
            if unit not in ("%", ""):
                raise ValueError(f"loss is a percentage (loss=2%), not {unit!r}")
            if number > 100:
                raise ValueError(f"loss must be at most 100%, not {number:g}%")
        elif key == "rate":
            if unit not in _RATE_UNITS:
                raise ValueError(f"rate needs a unit (kbit, mbit or gbit), not {unit!r}")
            number *= _RATE_UNITS[unit]
            if number < 8:
                raise ValueError("rate must be at least 8kbit")
        else:
            if unit not in _TIME_UNITS:
                raise ValueError(f"{key} needs a unit (ms or s), not {unit!r}")
            number *= _TIME_UNITS[unit]
        values[key] = number
    impairment = Impairment(
        loss_pct=values.get("loss", 0.0),
        delay_ms=values.get("delay", 0.0),
        jitter_ms=values.get("jitter", 0.0),
        rate_kbit=values.get("rate", 0.0),
    )
    if impairment.jitter_ms and not impairment.delay_ms:
        raise ValueError("jitter needs a delay (netem varies the delay by the jitter)")
    return impairment


def qdisc_commands(device: str, impairment: Impairment, probe_ips: list[str], side: str) -> list[list[str]]:
    """The ``tc`` commands that impair ``device``'s egress (run in the device's namespace).

    ``side`` is the address field that names the probe on this egress: ``dst`` on the server's end of
    the pair (downlink), ``src`` on the probes' end (uplink). Loss, delay and jitter act on each packet
    alone, so one ``netem`` serves every probe; a rate is a bottleneck, so each probe gets its own
    (an HTB class with a ``bfifo`` queue, chosen by the probe's address) and no probe's traffic can
    starve another's ICE and DTLS handshakes.
    """
    commands: list[list[str]] = []
    tc = ["tc", "qdisc", "add", "dev", device]
    parent = ["root"]
    if impairment.needs_netem:
        netem = [*tc, "root", "handle", "1:", "netem"]
        if impairment.delay_ms:
            netem += ["delay", f"{impairment.delay_ms:g}ms"]
            if impairment.jitter_ms:
                netem += [f"{impairment.jitter_ms:g}ms"]
        if impairment.loss_pct:
            netem += ["loss", f"{impairment.loss_pct:g}%"]
        commands.append(netem)
        parent = ["parent", "1:"]
    if impairment.rate_kbit:
        rate = f"{impairment.rate_kbit:g}kbit"
        bytes_per_s = impairment.rate_kbit * 1000 / 8
        burst = str(max(MIN_RATE_BURST_BYTES, int(bytes_per_s / 50)))  # 20 ms of data
        queue_bytes = str(int(bytes_per_s * RATE_QUEUE_MS / 1000) + int(burst))
        commands.append([*tc, *parent, "handle", "2:", "htb"])  # unmatched packets (ARP) pass unshaped
        for k, ip in enumerate(probe_ips):
            classid = f"2:{k + FIRST_PROBE_CLASS:x}"  # tc reads class minors as hex
            commands.append(["tc", "class", "add", "dev", device, "parent", "2:", "classid", classid, "htb"])
            commands[-1] += ["rate", rate, "ceil", rate, "burst", burst, "cburst", burst]
            commands.append([*tc, "parent", classid, "bfifo", "limit", queue_bytes])
            match = ["u32", "match", "ip", side, f"{ip}/32", "flowid", classid]
            commands.append(["tc", "filter", "add", "dev", device, "parent", "2:", "protocol", "ip", "prio", "1"])
            commands[-1] += match
    return commands
