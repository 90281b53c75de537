"""Access tokens: HS256 JWTs with a LiveKit video grant, and credentials that never print the secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from lkswarm.errors import ConfigError

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"  # livekit-server's own dev default (`--dev` without keys)
DEFAULT_TOKEN_TTL_S = 6 * 3600
# An access token (a JWT: base64url header, payload and signature): a bearer credential, which livekit-server
# quotes back in its refusals ("invalid token: eyJ...") and logs.
ACCESS_TOKEN = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Credentials:
    """An API key and its secret. The secret is left out of ``repr`` so it cannot leak into logs."""

    api_key: str
    api_secret: str = field(repr=False)

    @classmethod
    def from_env(cls, api_key: str | None = None, api_secret: str | None = None) -> Credentials:
        """Explicit values win; then ``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET``; then the dev keys."""
        key = api_key or os.environ.get("LIVEKIT_API_KEY") or None
        secret = api_secret or os.environ.get("LIVEKIT_API_SECRET") or None
        if key is None and secret is None:
            return cls(DEV_API_KEY, DEV_API_SECRET)
        if not key or not secret:
            raise ConfigError("set both the API key and the API secret (LIVEKIT_API_KEY and LIVEKIT_API_SECRET)")
        return cls(key, secret)

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the secret, and every access token, replaced."""
        text = ACCESS_TOKEN.sub("<token>", text)
        return text.replace(self.api_secret, "***") if self.api_secret else text


def safe_url(url: Any) -> str:
    """The URL without user info, query or fragment: where tokens and passwords would hide."""
    from urllib.parse import urlsplit, urlunsplit

    if not url:
        return ""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "(unparsable url)"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_HEADER = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())


def mint_token(
    credentials: Credentials,
    *,
    identity: str,
    room: str | None = None,
    ttl_s: float = DEFAULT_TOKEN_TTL_S,
    name: str | None = None,
    room_join: bool = True,
    room_admin: bool = False,
    room_list: bool = False,
    room_create: bool = False,
    can_publish: bool | None = None,
    can_subscribe: bool | None = None,
    can_publish_data: bool | None = None,
    hidden: bool = False,
    metadata: str | None = None,
    now_s: float | None = None,
) -> str:
    """Signs an access token the way livekit-server verifies it (HS256, ``iss`` = API key, ``sub`` = identity)."""
    issued = int(time.time() if now_s is None else now_s)
    video: dict[str, Any] = {}
    if room_join:
        video["roomJoin"] = True
    if room_admin:
        video["roomAdmin"] = True
    if room_list:
        video["roomList"] = True
    if room_create:
        video["roomCreate"] = True
    if room is not None:
        video["room"] = room
    for key, value in (
        ("canPublish", can_publish),
        ("canSubscribe", can_subscribe),
        ("canPublishData", can_publish_data),
    ):
        if value is not None:
            video[key] = value
    if hidden:
        video["hidden"] = True
    claims: dict[str, Any] = {
        "iss": credentials.api_key,
        "sub": identity,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
        "video": video,
    }
    if name is not None:
        claims["name"] = name
    if metadata is not None:
        claims["metadata"] = metadata
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{_HEADER}.{payload}".encode("ascii")
    signature = hmac.new(credentials.api_secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{_HEADER}.{payload}.{_b64url(signature)}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a token, unverified (for tests and diagnostics)."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"not a JWT: {exc}") from None
    return claims
