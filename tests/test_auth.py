"""Access tokens and credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from lkswarm.auth import DEV_API_KEY, Credentials, decode_claims, mint_token
from lkswarm.errors import ConfigError


def test_token_claims_follow_livekit_grants() -> None:
    creds = Credentials("key1", "s" * 32)
    token = mint_token(creds, identity="bot-1", room="load-1", ttl_s=60, now_s=1_700_000_000)
    claims = decode_claims(token)
    assert claims["iss"] == "key1"
    assert claims["sub"] == "bot-1"
    assert claims["nbf"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_060
    assert claims["video"] == {"roomJoin": True, "room": "load-1"}


def test_token_signature_is_hs256_over_header_and_payload() -> None:
    creds = Credentials("key1", "topsecret")
    header, payload, signature = mint_token(creds, identity="a", room="r").split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    expected = hmac.new(b"topsecret", f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected


def test_secret_never_in_repr_and_redacted() -> None:
    creds = Credentials("key1", "very-secret-value")
    assert "very-secret-value" not in repr(creds)
    assert creds.redact("bad secret very-secret-value here") == "bad secret *** here"


def test_credentials_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_API_KEY", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    assert Credentials.from_env().api_key == DEV_API_KEY
    monkeypatch.setenv("LIVEKIT_API_KEY", "envkey")
    with pytest.raises(ConfigError, match="both"):
        Credentials.from_env()
    monkeypatch.setenv("LIVEKIT_API_SECRET", "envsecret")
    assert Credentials.from_env() == Credentials("envkey", "envsecret")
    assert Credentials.from_env("flagkey", "flagsecret") == Credentials("flagkey", "flagsecret")
