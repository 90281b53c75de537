"""A small Twirp (JSON) client for livekit-server's RoomService."""

from __future__ import annotations

import json
import ssl
from typing import Any

from lkswarm.auth import Credentials, mint_token
from lkswarm.errors import SignalError


def http_base(url: str) -> str:
    """``ws://host:port`` or ``wss://`` → the matching ``http(s)://`` base."""
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :].rstrip("/")
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :].rstrip("/")
    return url.rstrip("/")


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
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.tls) as response:
                result: dict[str, Any] = json.loads(response.read() or b"{}")
                return result
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise SignalError(f"http_{exc.code}", f"{method}: {self.credentials.redact(detail)}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SignalError("unreachable", f"{method}: {exc}") from None

    def list_participants(self, room: str) -> list[dict[str, Any]]:
        """Participants of ``room`` as Twirp JSON (snake_case names, enums as names)."""
        participants: list[dict[str, Any]] = self._call("ListParticipants", {"room": room}, room).get(
            "participants", []
        )
        return participants

    def list_rooms(self) -> list[dict[str, Any]]:
        rooms: list[dict[str, Any]] = self._call("ListRooms", {}, None).get("rooms", [])
        return rooms

    def delete_room(self, room: str) -> None:
        self._call("DeleteRoom", {"room": room}, None)
