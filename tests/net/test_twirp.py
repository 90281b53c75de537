"""The RoomService client's answers, socket-free: ``urllib.request.urlopen`` is replaced by a canned response.

Whatever a server or a gateway in front of it answers, a call either returns Twirp's JSON object or raises
`SignalError` with a one-line reason: a 200 that is not JSON (a proxy's HTML page), JSON of the wrong shape,
a body cut short (http.client's IncompleteRead, which is not an OSError) and a refused connection alike.
"""

from __future__ import annotations

import http.client
import io
from typing import Any

import pytest

from lkswarm.auth import Credentials
from lkswarm.errors import SignalError
from lkswarm.net import twirp as twirp_module
from lkswarm.net.twirp import RoomService

SECRET = "twirp-test-secret-0123456789abcdef"


class CannedResponse(io.BytesIO):
    """What ``urlopen`` returns: a readable body usable as a context manager."""

    def __enter__(self) -> CannedResponse:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def service_answering(monkeypatch: pytest.MonkeyPatch, answer: bytes | BaseException) -> RoomService:
    def urlopen(*_: Any, **__: Any) -> CannedResponse:
        if isinstance(answer, BaseException):
            raise answer
        return CannedResponse(answer)

    monkeypatch.setattr(twirp_module, "open_direct", urlopen)
    return RoomService("ws://127.0.0.1:7880", Credentials("twirp-key", SECRET))


def test_a_participant_list_is_returned_as_twirp_json(monkeypatch: pytest.MonkeyPatch) -> None:
    service = service_answering(monkeypatch, b'{"participants": [{"identity": "a", "sid": "PA_1"}]}')
    assert service.list_participants("room") == [{"identity": "a", "sid": "PA_1"}]
    assert service_answering(monkeypatch, b"").list_participants("room") == []  # an empty room's answer


@pytest.mark.parametrize(
    ("body", "reason_words"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON: '<html><body>502 Bad Gateway"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"participants": {"identity": "a"}}', "not a list of participants"),
        (b'{"participants": [{"sid": "PA_1"}]}', "not a list of participants"),
        (b'{"participants": ["a"]}', "not a list of participants"),
    ],
)
def test_an_answer_that_is_not_twirps_is_a_one_line_signal_error(
    monkeypatch: pytest.MonkeyPatch, body: bytes, reason_words: str
) -> None:
    service = service_answering(monkeypatch, body)
    with pytest.raises(SignalError) as caught:
        service.list_participants("room")
    assert caught.value.reason == "bad_response"
    assert reason_words in caught.value.detail
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_a_room_list_of_the_wrong_shape_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SignalError, match="not a list of rooms"):
        service_answering(monkeypatch, b'{"rooms": "r1"}').list_rooms()


def test_a_body_cut_short_is_a_signal_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    service = service_answering(monkeypatch, http.client.IncompleteRead(b'{"partic', 40))
    with pytest.raises(SignalError) as caught:
        service.list_participants("room")
    assert caught.value.reason == "bad_response"
    assert "IncompleteRead" in caught.value.detail


def test_a_refused_connection_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    service = service_answering(monkeypatch, ConnectionRefusedError(111, "Connection refused"))
    with pytest.raises(SignalError) as caught:
        service.list_rooms()
    assert caught.value.reason == "unreachable"
    assert SECRET not in str(caught.value)
