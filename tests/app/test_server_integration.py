"""The real livekit-server: the fixture is real, the join works, bad input gets clear errors."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvloop
from google.protobuf.json_format import MessageToDict
from livekit.protocol import rtc

from lkswarm.app.server import LocalServer, check_port_free, listens_on
from lkswarm.auth import Credentials, mint_token
from lkswarm.errors import PortInUseError
from lkswarm.net.twirp import RoomService
from lkswarm.net.ws_driver import Endpoint, WebSocketProtocol, open_websocket
from lkswarm.signal.codec import decode_response, encode_leave
from lkswarm.signal.join_request import rtc_path
from lkswarm.signal.websocket import Closed, Event, Message, Rejected


async def first_frame(url: str, token: str) -> tuple[Event, WebSocketProtocol]:
    """Opens /rtc; returns the first Message, Rejected or Closed event and the connection to close."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[Event] = loop.create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, Message | Rejected | Closed) and not got.done():
            got.set_result(event)

    connection = await open_websocket(Endpoint.parse(url), rtc_path(token), on_event)
    return await asyncio.wait_for(got, 15), connection


pytestmark = pytest.mark.integration  # the real livekit-server (or the network) throughout


def wait_until(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.1)
    return False


def test_join_response_is_first_frame_and_participant_is_listed(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    room = "it-join"
    token = mint_token(credentials, identity="it-alice", room=room)
    rooms = RoomService(livekit_server.url, credentials)

    async def scenario() -> None:
        event, connection = await first_frame(livekit_server.url, token)
        assert isinstance(event, Message) and isinstance(event.data, bytes), event
        response = decode_response(event.data)
        assert response.kind == "join"
        join = response.join
        assert join.participant.identity == "it-alice"
        assert join.participant.sid.startswith("PA_")
        assert join.room.name == room
        assert join.server_version == "1.13.5"
        assert join.ping_interval == 5 and join.ping_timeout == 15
        # The real wire agrees with the reference decoder.
        reference = rtc.SignalResponse.FromString(event.data)
        assert response.to_dict() == MessageToDict(reference)

        listed = await asyncio.to_thread(rooms.list_participants, room)
        assert [p["identity"] for p in listed] == ["it-alice"]
        assert listed[0]["sid"] == join.participant.sid
        connection.send(encode_leave(1))
        connection.close()

    uvloop.run(scenario())
    assert wait_until(lambda: rooms.list_participants(room) == []), "participant still listed after leave"


def test_wrong_secret_is_401_without_leaking_it(livekit_server: LocalServer, credentials: Credentials) -> None:
    forged = Credentials(credentials.api_key, "not-the-secret-but-long-enough-000000")
    token = mint_token(forged, identity="it-mallory", room="it-bad")

    async def scenario() -> Event:
        event, connection = await first_frame(livekit_server.url, token)
        connection.close()
        return event

    event = uvloop.run(scenario())
    assert isinstance(event, Rejected)
    assert event.status == 401
    assert credentials.api_secret not in event.body


def test_unknown_key_is_401(livekit_server: LocalServer) -> None:
    token = mint_token(Credentials("nobody", "x" * 32), identity="it-x", room="it-bad")

    async def scenario() -> Event:
        event, connection = await first_frame(livekit_server.url, token)
        connection.close()
        return event

    event = uvloop.run(scenario())
    assert isinstance(event, Rejected) and event.status == 401 and "nobody" in event.body


def test_busy_port_is_named(credentials: Credentials) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(port)):
            LocalServer(credentials, port=port).start()
        with pytest.raises(PortInUseError, match=str(port)):
            check_port_free(port, socket.SOCK_STREAM, "test")


def test_server_stop_is_clean_with_participant_connected(credentials: Credentials) -> None:
    server = LocalServer(credentials)
    server.start()
    token = mint_token(credentials, identity="it-stays", room="it-stop")

    async def scenario() -> None:
        event, connection = await first_frame(server.url, token)
        assert isinstance(event, Message)
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - started < 15
        assert not server.running()
        connection.close()

    uvloop.run(scenario())


def test_a_server_that_dies_is_named_with_its_log_and_a_proxy_does_not_stall_its_start(
    credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The readiness check went through an http_proxy of the environment (never ready with one set); a server
    that died mid-run left only its participants' failures in the report."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a proxy nobody answers on
    monkeypatch.delenv("no_proxy", raising=False)
    server = LocalServer(credentials)
    server.start(timeout_s=30)
    try:
        assert server.death_note() is None
        assert server._process is not None
        server._process.kill()
        server._process.wait(10)
        note = server.death_note()
        assert note is not None and note.startswith("the embedded livekit-server exited during the run (code -9): ")
        assert "(no log)" not in note and credentials.api_secret not in note
    finally:
        server.stop()


def test_a_chosen_port_taken_before_the_server_binds_it_is_chosen_again(credentials: Credentials) -> None:
    """The ports we choose are free when asked, not reserved: one taken meanwhile made the server exit with
    'address already in use', and `lkswarm server` print nothing but that (a gate saw it once)."""
    server = LocalServer(credentials)
    taken = server.metrics_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.metrics_port != taken and server.healthy()
            # Its signaling port taken by another livekit-server (a parallel run): chosen again, and the one
            # that answers is ours (a 200 from the other one passed for ready while ours exited).
            second = LocalServer(credentials)
            second.port = server.port
            with second:
                assert second.port != server.port and second.pid is not None
                assert listens_on(second.pid, second.port) and not listens_on(second.pid, server.port)
