"""Network impairment for probes: a private network namespace, a veth pair, and Linux qdiscs on it.

Theory of operation::

    root namespace                               probe namespace (lkswarm-<pid>)
    livekit-server  <-- 10.213.N.1 [veth lk<pid>r] ==== [veth lk<pid>p] 10.213.N.2 --> probe sockets
                        egress qdisc: server -> probe       egress qdisc: probe -> server

Only the probes' media goes through the pair: the probe loop thread moves
itself into the namespace (``setns``) before aiortc opens a socket, so every
UDP socket of the probe tier lives there, while signaling (on the main loop)
and the light tier stay in the root namespace on loopback. Each direction gets
the whole impairment, so a probe-to-probe path (publisher up, subscriber down)
crosses it twice: ``delay=40ms`` adds 80 ms to the end-to-end latency.

The server must listen on the gateway address, and only there: livekit-server
binds its UDP port once per interface address at start and answers from the
socket of its one advertised IPv4 candidate, and an answer from its 127.0.0.1
socket cannot leave the root namespace. So the namespace exists before the
server starts, and the embedded server puts its media on the root end of the
pair alone (``node_ip`` = gateway, ``rtc.interfaces``; see
`lkswarm.server.server_config`), which loopback clients reach too. A ``--url``
server knows nothing of the pair, and is refused.

Loss, delay and jitter use ``netem``; rate uses ``tbf`` (below netem when both
are asked for), so a kernel without ``sch_netem`` can still rate-limit. What
the kernel cannot do is a clear `ImpairmentError`, raised before the run, and
`unsupported_reason` says the same for tests that must skip.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from lkswarm.errors import ConfigError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
SUBNET_PREFIX = "10.213"  # 10.213.N.0/30, N picked so it collides with no address on this host
TBF_QUEUE_MS = 200  # tbf holds at most this much queued data, then drops (a modest bottleneck buffer)
MIN_TBF_BURST_BYTES = 3200
COMMAND_TIMEOUT_S = 10.0

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


def qdisc_commands(device: str, impairment: Impairment) -> list[list[str]]:
    """The ``tc`` commands that impair ``device``'s egress (run in the device's namespace)."""
    commands: list[list[str]] = []
    parent = ["root"]
    if impairment.needs_netem:
        netem = ["tc", "qdisc", "add", "dev", device, "root", "handle", "1:", "netem"]
        if impairment.delay_ms:
            netem += ["delay", f"{impairment.delay_ms:g}ms"]
            if impairment.jitter_ms:
                netem += [f"{impairment.jitter_ms:g}ms"]
        if impairment.loss_pct:
            netem += ["loss", f"{impairment.loss_pct:g}%"]
        commands.append(netem)
        parent = ["parent", "1:", "handle", "2:"]
    if impairment.rate_kbit:
        bytes_per_s = impairment.rate_kbit * 1000 / 8
        burst = max(MIN_TBF_BURST_BYTES, int(bytes_per_s / 50))  # 20 ms of data
        tbf = ["tc", "qdisc", "add", "dev", device, *parent, "tbf", "rate", f"{impairment.rate_kbit:g}kbit"]
        commands.append([*tbf, "burst", str(burst), "latency", f"{TBF_QUEUE_MS}ms"])
    return commands


def _run(command: list[str], netns: str | None = None) -> str:
    full = ["ip", "netns", "exec", netns, *command] if netns else command
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImpairmentError(f"`{' '.join(command)}` failed: {exc}") from None
    if done.returncode != 0:
        # tc answers a bad line with its whole usage text: keep the first line, the one that says why.
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[0]
        raise ImpairmentError(f"`{' '.join(command)}` failed: {why}")
    return done.stdout


def unsupported_reason(impairment: Impairment | None = None) -> str | None:
    """Why probe impairment cannot run on this host (None when it can): for clear errors and test skips."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating a network namespace needs root (CAP_NET_ADMIN); run as root or in a privileged container"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: apt install iproute2)"
    name = f"lkswarm-check-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", name])
    except ImpairmentError as exc:
        return f"network namespaces are not permitted here: {exc}"
    try:
        _run(["ip", "link", "set", "lo", "up"], netns=name)
        if impairment is not None and impairment.needs_netem:
            try:
                _run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], netns=name)
            except ImpairmentError as exc:
                return f"this kernel has no netem qdisc (sch_netem), so loss/delay/jitter are unavailable: {exc}"
        if impairment is not None and impairment.rate_kbit:
            try:
                tbf = ["tbf", "rate", "1mbit", "burst", "3200", "latency", "100ms"]
                _run(["tc", "qdisc", "add", "dev", "lo", "root", *tbf], netns=name)
                _run(["tc", "qdisc", "del", "dev", "lo", "root"], netns=name)
            except ImpairmentError as exc:
                return f"this kernel has no tbf qdisc (sch_tbf), so rate is unavailable: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def _pick_subnet() -> ipaddress.IPv4Network:
    """A /30 under 10.213.0.0/16 that no interface of this host overlaps."""
    used = [ipaddress.ip_interface(word).network for word in re.findall(r"inet (\S+)", _run(["ip", "-4", "addr"]))]
    for third in [os.getpid() % 256, *range(256)]:
        subnet = ipaddress.IPv4Network(f"{SUBNET_PREFIX}.{third}.0/30")
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise ImpairmentError(f"no free /30 under {SUBNET_PREFIX}.0.0/16 for the probes' veth pair")


class ProbeNetwork:
    """The probes' namespace and impaired veth pair; `close` removes both (deleting the namespace does)."""

    def __init__(self, impairment: Impairment) -> None:
        self.impairment = impairment
        pid = os.getpid()
        self.netns = f"lkswarm-{pid}"
        self.root_device = f"lk{pid}r"[-15:]  # interface names are at most 15 bytes
        self.probe_device = f"lk{pid}p"[-15:]
        self.gateway_ip = ""
        self.probe_ip = ""
        self._open = False

    def open(self) -> None:
        subnet = _pick_subnet()
        gateway, probe = list(subnet.hosts())
        self.gateway_ip, self.probe_ip = str(gateway), str(probe)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)  # a crashed run's
        self._open = True
        try:
            _run(["ip", "netns", "add", self.netns])
            _run(["ip", "link", "add", self.root_device, "type", "veth", "peer", "name", self.probe_device])
            _run(["ip", "link", "set", self.probe_device, "netns", self.netns])
            _run(["ip", "addr", "add", f"{gateway}/30", "dev", self.root_device])
            _run(["ip", "link", "set", self.root_device, "up"])
            _run(["ip", "addr", "add", f"{probe}/30", "dev", self.probe_device], netns=self.netns)
            _run(["ip", "link", "set", self.probe_device, "up"], netns=self.netns)
            _run(["ip", "link", "set", "lo", "up"], netns=self.netns)
            for command in qdisc_commands(self.root_device, self.impairment):
                _run(command)
            for command in qdisc_commands(self.probe_device, self.impairment):
                _run(command, netns=self.netns)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._open:
            self._open = False
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", self.root_device], capture_output=True, check=False)

    def __enter__(self) -> ProbeNetwork:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enter_namespace(self) -> None:
        """Moves the calling thread (only it) into the probes' namespace; sockets it opens then live there."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"{NETNS_DIR}/{self.netns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise ImpairmentError(f"setns({self.netns}) failed: {os.strerror(errno)}")
        finally:
            os.close(fd)

    def stats(self) -> dict[str, Any]:
        """What each direction's qdiscs sent and dropped, for the report (``tc -s``)."""
        return {
            "impairment": self.impairment.as_dict(),
            "namespace": self.netns,
            "downlink": _qdisc_stats(_run(["tc", "-s", "qdisc", "show", "dev", self.root_device])),
            "uplink": _qdisc_stats(_run(["tc", "-s", "qdisc", "show", "dev", self.probe_device], netns=self.netns)),
        }


_SENT = re.compile(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)")


def _qdisc_stats(text: str) -> dict[str, int]:
    """The root qdisc's counters (netem counts its own drops; tbf's overlimits say the rate bit)."""
    counts = [tuple(int(x) for x in match.groups()) for match in _SENT.finditer(text)]
    if not counts:
        return {"bytes": 0, "packets": 0, "dropped": 0, "overlimits": 0}
    sent_bytes, packets = counts[0][0], counts[0][1]
    return {
        "bytes": sent_bytes,
        "packets": packets,
        "dropped": sum(c[2] for c in counts),
        "overlimits": sum(c[3] for c in counts),
    }
