"""Group a `perf script` dump of the media thread into where its CPU goes (issue #24's profile summary).

Each sample is charged to the first group (in the order of ``GROUPS``) that any frame of its stack
matches, so a sample inside ``do_handle_timeout`` called from ``handle_input`` counts once, under
"str0m timers run on receive", however deep it is. Percentages are of the samples of the threads
named ``--comm`` (default ``lkswarm-media``).

Usage::

    perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -t <media thread id> -o perf.data -- sleep 15
    perf script -i perf.data > perf.txt
    python bench/tools/perf_groups.py perf.txt [--comm lkswarm-media] [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (group, pattern over the whole stack); the first that matches any frame, in this order, wins.
GROUPS: list[tuple[str, str]] = [
    (
        "kernel: io_uring (multishot recvmsg, batched sends, the wait)",
        r"io_uring|io_recvmsg|io_sendmsg|__io_|io_poll|io_issue",
    ),
    ("kernel: recvmmsg (one per ready socket)", r"recvmmsg"),
    ("kernel: sendto (RTCP, STUN out)", r"sendto|sendmsg"),
    ("kernel: epoll_wait, nap, scheduling", r"epoll_wait|nanosleep|finish_task_switch|__schedule"),
    ("SRTP: AES-256-GCM open (aws-lc-rs)", r"Aes256GcmCipher|aws_lc_|aead_aes_gcm"),
    ("str0m: all timers, run by handle_input(Receive) on every datagram", r"__TIMERS_ON_RECEIVE__"),
    ("str0m: timers at the hub's deadline (Input::Timeout)", r"do_handle_timeout|Session::handle_timeout"),
    (
        "str0m: RTP/RTCP receive (demux, register, NACK/TWCC state)",
        r"handle_rtp|handle_rtcp|do_handle_receive|mid_ssrc_rx|update_register|NackRegister"
        r"|handle_external_rtp|account_external|update_max_seq",
    ),
    (
        "str0m: poll_output drain (events, transmits, next timeout)",
        r"do_poll_output|poll_timeout|Dtls::poll_output|MediaPeer::drain|queue_state|poll_remb",
    ),
    ("own SRTP path: parse, replay window, RTP accounting (peer/own_srtp.rs, srtp_rx/)", r"own_srtp|srtp_rx|RxStats"),
    ("hub: loop, service, per-datagram hand-off", r"lkswarm_core::media|__rust_begin_short_backtrace"),
    ("kernel: other (interrupts, exits)", r"\[k\]"),
]
TIMERS = r"do_handle_timeout|Session::handle_timeout"


def samples(text: str, comm: str) -> list[list[str]]:
    """Stacks (leaf first) of the samples whose thread name is ``comm``."""
    out: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            if current is not None:
                out.append(current)
            current = None
            continue
        if not line.startswith((" ", "\t")):
            current = [] if line.split()[0] == comm else None
            continue
        if current is not None:
            parts = line.strip().split(None, 1)
            symbol = parts[1] if len(parts) > 1 else parts[0]
            kernel = "[kernel.kallsyms]" in symbol
            current.append(re.sub(r"\s+\(.*\)$", "", symbol) + (" [k]" if kernel else ""))
    if current is not None:
        out.append(current)
    return out


def group_of(stack: list[str]) -> str:
    joined = "\n".join(stack)
    for name, pattern in GROUPS:
        if pattern == "__TIMERS_ON_RECEIVE__":
            if re.search(TIMERS, joined) and "feed_datagram" in joined:
                return name
            continue
        if re.search(pattern, joined):
            return name
    return "other (leaf: " + (stack[0].split("+")[0][:60] if stack else "?") + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump")
    parser.add_argument("--comm", default="lkswarm-media")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stacks = samples(Path(args.dump).read_text(errors="replace"), args.comm)
    groups = Counter(group_of(s) for s in stacks)
    leaves = Counter(s[0].split("+0x")[0] for s in stacks if s)
    total = max(1, len(stacks))
    print(f"{len(stacks)} samples of {args.comm}")
    print("| function group | % of media-thread CPU |\n|---|---|")
    others = 0
    for name, count in groups.most_common():
        if name.startswith("other"):
            others += count
            continue
        print(f"| {name} | {100 * count / total:.1f} |")
    print(f"| other | {100 * others / total:.1f} |")
    print("\nleaf symbols (self time):")
    for name, count in leaves.most_common(args.top):
        print(f"{100 * count / total:5.1f}  {name[:140]}")


if __name__ == "__main__":
    main()
