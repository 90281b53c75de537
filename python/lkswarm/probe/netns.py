"""Network impairment for probes: a private network namespace, a veth pair, and Linux qdiscs on it.

Theory of operation::

    root namespace                               probe namespace (lkswarm-<pid>)
    livekit-server  <-- 10.213.N.1 [veth lk<pid>r] ==== [veth lk<pid>p] 10.213.N.2+k --> probe k's sockets
                        egress qdisc: server -> probe       egress qdisc: probe -> server

Only the probes' media goes through the pair: the probe loop thread moves
itself into the namespace (``setns``) before aiortc opens a socket, so every
UDP socket of the probe tier lives there, while signaling (on the main loop)
and the light tier stay in the root namespace on loopback. Each direction gets
the whole impairment, so a probe-to-probe path (publisher up, subscriber down)
crosses it twice: ``delay=40ms`` adds 80 ms to the end-to-end latency.

Each probe is a user on a link of its own. Probe k binds its sockets to its
own address (10.213.N.2+k), and a rate limit is one HTB class per probe,
chosen by that address (destination on the downlink, source on the uplink).
With one shared bottleneck, the first probe's video filled the queue while a
later probe was still in its DTLS handshake, whose flights were then lost
(aiortc backs off up to 60 s), so whether that probe ever connected was
chance. Loss, delay and jitter act on each packet alone, so one ``netem``
serves all probes.

The server must listen on the gateway address, and only there: livekit-server
binds its UDP port once per interface address at start and answers from the
socket of its one advertised IPv4 candidate, and an answer from its 127.0.0.1
socket cannot leave the root namespace. So the namespace exists before the
server starts, and the embedded server puts its media on the root end of the
pair alone (``node_ip`` = gateway, ``rtc.interfaces``; see
`lkswarm.app.server.server_config`), which loopback clients reach too. A ``--url``
server knows nothing of the pair, and is refused.

Loss, delay and jitter use ``netem``; rate uses ``htb`` with a ``bfifo`` queue
per probe (below netem when both are asked for), so a kernel without
``sch_netem`` can still rate-limit. What the kernel cannot do is a clear
`ImpairmentError`, raised before the run, and `unsupported_reason` says the
same for tests that must skip.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from lkswarm.impairment import FIRST_PROBE_CLASS, Impairment, ImpairmentError, qdisc_commands

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
SUBNET_PREFIX = "10.213"  # the pair's subnet lies under 10.213.0.0/16, where it collides with no host address
COMMAND_TIMEOUT_S = 10.0


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
                for command in qdisc_commands("lo", Impairment(rate_kbit=1000), ["127.0.0.2"], "dst"):
                    _run(command, netns=name)
            except ImpairmentError as exc:
                return (
                    "this kernel cannot shape a rate per probe (it needs the htb and bfifo qdiscs and the u32 "
                    f"filter: sch_htb, sch_fifo, cls_u32): {exc}"
                )
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    return None


def _subnet_prefix(probes: int) -> int:
    """The longest IPv4 prefix whose subnet holds the gateway and one address per probe."""
    for prefix in range(30, 15, -1):
        if 2 ** (32 - prefix) - 2 >= probes + 1:
            return prefix
    raise ImpairmentError(f"--probe-impair gives each probe its own address; {probes} probes are too many")


def _pick_subnet(probes: int) -> ipaddress.IPv4Network:
    """A subnet under 10.213.0.0/16, big enough for the gateway and every probe, that no interface overlaps."""
    used = [ipaddress.ip_interface(word).network for word in re.findall(r"inet (\S+)", _run(["ip", "-4", "addr"]))]
    subnets = list(ipaddress.IPv4Network(f"{SUBNET_PREFIX}.0.0/16").subnets(new_prefix=_subnet_prefix(probes)))
    start = os.getpid() % len(subnets)  # concurrent runs on one host start apart
    for subnet in subnets[start:] + subnets[:start]:
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise ImpairmentError(f"no free subnet under {SUBNET_PREFIX}.0.0/16 for the probes' veth pair")


class ProbeNetwork:
    """The probes' namespace and impaired veth pair; `close` removes both (deleting the namespace does)."""

    def __init__(self, impairment: Impairment, probes: int) -> None:
        self.impairment = impairment
        self.probes = probes
        pid = os.getpid()
        self.netns = f"lkswarm-{pid}"
        self.root_device = f"lk{pid}r"[-15:]  # interface names are at most 15 bytes
        self.probe_device = f"lk{pid}p"[-15:]
        self.gateway_ip = ""
        self.probe_ips: list[str] = []  # probe k binds its sockets to probe_ips[k] (lkswarm.probe.aiortc_patches)
        self._open = False

    def open(self) -> None:
        subnet = _pick_subnet(self.probes)
        gateway, *hosts = list(subnet.hosts())
        self.gateway_ip = str(gateway)
        self.probe_ips = [str(host) for host in hosts[: self.probes]]
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)  # a crashed run's
        self._open = True
        try:
            _run(["ip", "netns", "add", self.netns])
            _run(["ip", "link", "add", self.root_device, "type", "veth", "peer", "name", self.probe_device])
            _run(["ip", "link", "set", self.probe_device, "netns", self.netns])
            _run(["ip", "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", self.root_device])
            _run(["ip", "link", "set", self.root_device, "up"])
            for ip in self.probe_ips:
                _run(["ip", "addr", "add", f"{ip}/{subnet.prefixlen}", "dev", self.probe_device], netns=self.netns)
            _run(["ip", "link", "set", self.probe_device, "up"], netns=self.netns)
            _run(["ip", "link", "set", "lo", "up"], netns=self.netns)
            for command in qdisc_commands(self.root_device, self.impairment, self.probe_ips, "dst"):
                _run(command)
            for command in qdisc_commands(self.probe_device, self.impairment, self.probe_ips, "src"):
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
        """What each direction's qdiscs sent and dropped, for the report (``tc -s``), in all and per probe."""
        down_qdiscs = _run(["tc", "-s", "qdisc", "show", "dev", self.root_device])
        up_qdiscs = _run(["tc", "-s", "qdisc", "show", "dev", self.probe_device], netns=self.netns)
        out: dict[str, Any] = {
            "impairment": self.impairment.as_dict(),
            "namespace": self.netns,
            "downlink": _qdisc_stats(down_qdiscs),
            "uplink": _qdisc_stats(up_qdiscs),
        }
        if self.impairment.rate_kbit:
            down = _class_stats(_run(["tc", "-s", "class", "show", "dev", self.root_device]))
            up = _class_stats(_run(["tc", "-s", "class", "show", "dev", self.probe_device], netns=self.netns))
            out["per_probe"] = [
                {"ip": ip, "downlink": down.get(k, _NO_COUNTS), "uplink": up.get(k, _NO_COUNTS)}
                for k, ip in enumerate(self.probe_ips)
            ]
        return out


_SENT = re.compile(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)")
_CLASS = re.compile(r"^class htb 2:([0-9a-f]+) .*\n\s*" + _SENT.pattern, re.M)
_NO_COUNTS = {"bytes": 0, "packets": 0, "dropped": 0, "overlimits": 0}


def _qdisc_stats(text: str) -> dict[str, int]:
    """One direction's counters: what the root qdisc sent and dropped, and how often a rate held packets back.

    The root's drop counter already includes its children's (netem and htb both count a packet their
    child refused), so only the root's is taken; overlimits are counted where the rate is (htb or tbf).
    """
    counts = [tuple(int(x) for x in match.groups()) for match in _SENT.finditer(text)]
    if not counts:
        return dict(_NO_COUNTS)
    sent_bytes, packets, dropped, _ = counts[0]
    return {"bytes": sent_bytes, "packets": packets, "dropped": dropped, "overlimits": sum(c[3] for c in counts)}


def _class_stats(text: str) -> dict[int, dict[str, int]]:
    """Each probe's HTB class counters (``tc -s class show``), by probe index."""
    out: dict[int, dict[str, int]] = {}
    for match in _CLASS.finditer(text):
        sent_bytes, packets, dropped, overlimits = (int(x) for x in match.groups()[1:])
        out[int(match.group(1), 16) - FIRST_PROBE_CLASS] = {
            "bytes": sent_bytes,
            "packets": packets,
            "dropped": dropped,
            "overlimits": overlimits,
        }
    return out
