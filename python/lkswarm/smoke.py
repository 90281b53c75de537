"""The smallest real load: N participants join, their join latencies are measured, and they leave.

This is what ``lkswarm run`` does until the full engine lands: every number is
measured against a real server, nothing is simulated.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.parse
from dataclasses import dataclass

from lkswarm import __version__
from lkswarm._core import decode_response, encode_leave
from lkswarm.auth import Credentials, mint_token
from lkswarm.errors import CodecError, SignalError
from lkswarm.transport import Endpoint, open_websocket
from lkswarm.ws import Closed, Event, Message, Opened, Rejected

SIGNAL_PROTOCOL_VERSION = 16  # highest protocol behaviour we implement (room_moved)
DISCONNECT_CLIENT_INITIATED = 1


@dataclass
class JoinResult:
    """One participant's join: latencies from its intended start, or the failure reason."""

    identity: str
    room: str
    ws_connect_ms: float | None = None
    join_response_ms: float | None = None
    participant_sid: str = ""
    other_participants: int = 0
    server_version: str = ""
    error: str = ""


def rtc_path(token: str, *, auto_subscribe: bool = True, protocol: int = SIGNAL_PROTOCOL_VERSION) -> str:
    query = {
        "access_token": token,
        "auto_subscribe": "1" if auto_subscribe else "0",
        "sdk": "python",
        "version": __version__,
        "protocol": str(protocol),
        "adaptive_stream": "0",
    }
    return "/rtc?" + urllib.parse.urlencode(query)


async def join_once(
    endpoint: Endpoint, credentials: Credentials, room: str, identity: str, timeout_s: float = 15.0
) -> JoinResult:
    loop = asyncio.get_running_loop()
    result = JoinResult(identity=identity, room=room)
    # loop.time() is millisecond-grained under uvloop; latencies need a finer clock.
    started = time.perf_counter()
    first_frame: asyncio.Future[bytes | str] = loop.create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, Opened):
            result.ws_connect_ms = (time.perf_counter() - started) * 1000
        elif isinstance(event, Message):
            if not first_frame.done():
                result.join_response_ms = (time.perf_counter() - started) * 1000
                first_frame.set_result(event.data)
        elif isinstance(event, Rejected):
            if not first_frame.done():
                first_frame.set_exception(SignalError(f"http_{event.status}", credentials.redact(event.body)))
        elif isinstance(event, Closed) and not first_frame.done():
            first_frame.set_exception(SignalError("closed_before_join", f"close code {event.code} {event.reason}"))

    token = mint_token(credentials, identity=identity, room=room)
    try:
        connection = await asyncio.wait_for(open_websocket(endpoint, rtc_path(token), on_event), timeout_s)
    except (SignalError, TimeoutError) as exc:
        result.error = exc.reason if isinstance(exc, SignalError) else "connect_timeout"
        return result
    try:
        frame = await asyncio.wait_for(first_frame, timeout_s)
        if isinstance(frame, str):
            raise SignalError("protocol_error", "first frame was text, expected a binary JoinResponse")
        response = decode_response(frame)
        if response.kind != "join":
            raise SignalError("protocol_error", f"first frame was {response.kind!r}, expected 'join'")
        join = response.join
        result.participant_sid = join.participant.sid
        result.other_participants = len(join.other_participants)
        result.server_version = join.server_version
        connection.send(encode_leave(DISCONNECT_CLIENT_INITIATED))
    except SignalError as exc:
        result.error = exc.reason
    except TimeoutError:
        result.error = "join_timeout"
    except CodecError:
        result.error = "malformed_frame"
    finally:
        connection.close()
    return result


async def run_joins(
    url: str, credentials: Credentials, *, participants: int, rooms: int, rate_per_s: float
) -> list[JoinResult]:
    """Starts ``participants`` joins spread over ``rooms`` at ``rate_per_s``; returns one result each."""
    endpoint = Endpoint.parse(url)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i in range(participants):
        room = f"lkswarm-smoke-{i % rooms}"
        await asyncio.sleep(max(0.0, t0 + i / rate_per_s - loop.time()))
        tasks.append(asyncio.create_task(join_once(endpoint, credentials, room, f"smoke-{i}")))
    return list(await asyncio.gather(*tasks))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(results: list[JoinResult]) -> dict[str, object]:
    joined = [r for r in results if not r.error]
    failures: dict[str, int] = {}
    for r in results:
        if r.error:
            failures[r.error] = failures.get(r.error, 0) + 1
    latencies = [r.join_response_ms for r in joined if r.join_response_ms is not None]
    summary: dict[str, object] = {
        "scheduled": len(results),
        "joined": len(joined),
        "failures": failures,
        "server_version": next((r.server_version for r in joined), ""),
    }
    if latencies:
        summary["join_response_ms"] = {
            "count": len(latencies),
            "min": min(latencies),
            "p50": percentile(latencies, 0.5),
            "p90": percentile(latencies, 0.9),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies),
            "mean": statistics.fmean(latencies),
        }
    return summary
