"""A small Twirp (JSON) client for livekit-server's RoomService."""

from __future__ import annotations

import json
import ssl
from typing import TYPE_CHECKING, Any

from lkswarm.auth import Credentials, mint_token
from lkswarm.errors import SignalError

if TYPE_CHECKING:
    import http.client
    import urllib.request


def http_base(url: str) -> str:
    """``ws://host:port`` or ``wss://`` → the matching ``http(s)://`` base."""
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :].rstrip("/")
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :].rstrip("/")
    return url.rstrip("/")


def _excerpt(raw: bytes) -> str:
    """The start of an answer's body, for a one-line error."""
    text = raw[:80].decode(errors="replace").replace("\n", " ")
    return repr(text + ("..." if len(raw) > 80 else ""))


def open_direct(
    request: urllib.request.Request | str, timeout_s: float, tls: ssl.SSLContext | None
) -> http.client.HTTPResponse:
    """``urlopen`` that never goes through ``http_proxy``/``https_proxy``: our HTTP calls carry an access token (in
    a header, or a join token in the URL), which a proxy would log; the participants' WebSockets go direct too."""
    import urllib.request  # lazily, as in `RoomService._call`

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls))
    response: http.client.HTTPResponse = opener.open(request, timeout=timeout_s)
    return response


class RoomService:
    """Synchronous RoomService calls; run them in a thread from async code."""

    def __init__(
        self, url: str, credentials: Credentials, tls: ssl.SSLContext | None = None, timeout_s: float = 10.0
    ) -> None:
        self.base = http_base(url)
        self.credentials = credentials
        self.timeout_s = timeout_s
        # The run's context (`lkswarm.net.ws_driver.tls_context`): without it urllib would build, and load
        # the system CA store into, a fresh one per https:// call, and ignore --ca-file and --insecure.
        self.tls = tls

    def _call(self, method: str, body: dict[str, Any], room: str | None) -> dict[str, Any]:
        # urllib.request brings http.client and email (about 10 ms of start-up): imported when first used.
        import http.client
        import urllib.error
        import urllib.request

        token = mint_token(
            self.credentials,
            identity="lkswarm-admin",
            room=room,
            room_join=False,
            room_admin=True,
            room_list=True,
            room_create=True,
            ttl_s=600,
        )
        request = urllib.request.Request(
            f"{self.base}/twirp/livekit.RoomService/{method}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with open_direct(request, self.timeout_s, self.tls) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise SignalError(f"http_{exc.code}", f"{method}: {self.credentials.redact(detail)}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SignalError("unreachable", f"{method}: {exc}") from None
        except http.client.HTTPException as exc:  # the server died mid-answer (IncompleteRead, BadStatusLine)
            raise SignalError("bad_response", f"{method}: {type(exc).__name__}: {exc}"[:300]) from None
        # A 200 that is not Twirp's JSON object (a proxy's or gateway's HTML page, a truncated body) is the
        # server's answer being wrong, not a crash of ours: one line, like every other refusal.
        try:
            result = json.loads(raw or b"{}")
        except ValueError:
            raise SignalError("bad_response", f"{method}: not JSON: {_excerpt(raw)}") from None
        if not isinstance(result, dict):
            raise SignalError("bad_response", f"{method}: not a JSON object: {_excerpt(raw)}")
        return result

    def list_participants(self, room: str) -> list[dict[str, Any]]:
        """Participants of ``room`` as Twirp JSON (snake_case names, enums as names)."""
        participants = self._call("ListParticipants", {"room": room}, room).get("participants", [])
        if not isinstance(participants, list) or not all(
            isinstance(p, dict) and isinstance(p.get("identity"), str) for p in participants
        ):
            raise SignalError("bad_response", f"ListParticipants: not a list of participants: {participants!r}"[:300])
        return participants

    def list_rooms(self) -> list[dict[str, Any]]:
        rooms = self._call("ListRooms", {}, None).get("rooms", [])
        if not isinstance(rooms, list) or not all(isinstance(r, dict) for r in rooms):
            raise SignalError("bad_response", f"ListRooms: not a list of rooms: {rooms!r}"[:300])
        return rooms

    def delete_room(self, room: str) -> None:
        self._call("DeleteRoom", {"room": room}, None)
