"""Codec micro-benchmarks: ours vs upb (protobuf's C backend) on the same frames, in the same run.

Run with `make bench` (or `pytest bench/bench_codec.py --benchmark-only`). Each pair of benchmarks shares a
group; `bench/run_all.py` turns the medians into ratios.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.internal import api_implementation
from livekit.protocol import rtc

from corpus import response_corpus, update_50
from lkswarm import _core

CORPUS = list(response_corpus().values())
UPDATE_50 = update_50()
PING_12B = _core.encode_ping(1_700_000_000_000, 12)
PONG_12B = CORPUS[0]

assert api_implementation.Type() == "upb", "the baseline must be upb"


def test_peek_ours(benchmark: Any) -> None:
    benchmark.group = "peek"
    peek = _core.peek_response

    def run() -> list[str | None]:
        return [peek(frame) for frame in CORPUS]

    kinds = benchmark(run)
    benchmark.extra_info["correct"] = kinds == [rtc.SignalResponse.FromString(f).WhichOneof("message") for f in CORPUS]


def test_peek_upb(benchmark: Any) -> None:
    benchmark.group = "peek"
    parse = rtc.SignalResponse.FromString

    def run() -> list[str | None]:
        return [parse(frame).WhichOneof("message") for frame in CORPUS]

    benchmark(run)


def read_update(update: Any) -> int:
    n = 0
    for p in update.participants:
        n += len(p.sid) + len(p.identity) + p.state
        for t in p.tracks:
            n += len(t.sid)
    return n


def test_decode_read_ours(benchmark: Any) -> None:
    benchmark.group = "decode_read_update_50"
    decode = _core.decode_response
    result = benchmark(lambda: read_update(decode(UPDATE_50).update))
    benchmark.extra_info["correct"] = result == read_update(rtc.SignalResponse.FromString(UPDATE_50).update)


def test_decode_read_upb(benchmark: Any) -> None:
    benchmark.group = "decode_read_update_50"
    parse = rtc.SignalResponse.FromString
    benchmark(lambda: read_update(parse(UPDATE_50).update))


def test_encode_ping_ours(benchmark: Any) -> None:
    benchmark.group = "encode_ping"
    encode = _core.encode_ping
    out = benchmark(encode, 1_700_000_000_000, 12)
    benchmark.extra_info["correct"] = out == upb_ping(1_700_000_000_000, 12)


def upb_ping(timestamp: int, rtt: int) -> bytes:
    return rtc.SignalRequest(ping_req=rtc.Ping(timestamp=timestamp, rtt=rtt)).SerializeToString()


def test_encode_ping_upb(benchmark: Any) -> None:
    benchmark.group = "encode_ping"
    benchmark(upb_ping, 1_700_000_000_000, 12)


@pytest.mark.parametrize("fn", ["noop", "peek"])
def test_call_overhead(benchmark: Any, fn: str) -> None:
    benchmark.group = "call_overhead_12B"
    target = _core.noop if fn == "noop" else _core.peek_response
    benchmark(target, PONG_12B if fn == "peek" else PING_12B)
