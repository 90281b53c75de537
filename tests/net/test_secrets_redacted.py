"""Access tokens and the API secret stay out of error text, URLs, Ray's job metadata and actors' environment."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from lkswarm.app import ray_engine
from lkswarm.auth import Credentials, mint_token
from lkswarm.errors import ConfigError
from lkswarm.net.ws_driver import Endpoint

SECRET = "SeCrEt-canary-0123456789abcdef0123456789"


def test_redact_scrubs_access_tokens_as_well_as_the_secret() -> None:
    """livekit-server quotes a refused token back ("invalid token: eyJ..."), and its logs hold tokens: a room
    check's 401 put the admin token in the report."""
    credentials = Credentials("key", SECRET)
    token = mint_token(credentials, identity="p0", room="r")
    text = credentials.redact(f"ListParticipants: invalid token: {token}, secret {SECRET}")
    assert token not in text and SECRET not in text and "eyJ" not in text
    assert text == "ListParticipants: invalid token: <token>, secret ***"


@pytest.mark.parametrize(
    "url",
    [f"ws://key:{SECRET}@127.0.0.1:7880", f"ws://127.0.0.1:7880/?access_token=eyJ{SECRET}", "ws://h:1/#" + SECRET],
)
def test_a_url_with_credentials_or_a_query_is_refused_without_echoing_them(url: str) -> None:
    """They went into the JSON report's target and config verbatim."""
    with pytest.raises(ConfigError) as refused:
        Endpoint.parse(url)
    assert SECRET not in str(refused.value)


def test_the_api_secret_is_kept_from_rays_entrypoint_and_a_local_clusters_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ray.init records sys.argv as the job's entrypoint (the GCS, the dashboard), and a local raylet inherits
    the environment: `--api-secret S` and LIVEKIT_API_SECRET reached both."""
    seen: dict[str, Any] = {}

    class FakeRay:
        @staticmethod
        def is_initialized() -> bool:
            return False

        @staticmethod
        def init(**_: Any) -> None:
            seen["argv"] = list(sys.argv)
            seen["env"] = os.environ.get("LIVEKIT_API_SECRET")

    argv = ["lkswarm", "run", "--api-secret", SECRET, f"--api-secret={SECRET}", "--ray", "local"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    assert ray_engine.connect(FakeRay, "local")  # type: ignore[arg-type]
    assert SECRET not in " ".join(seen["argv"]) and seen["env"] is None
    assert seen["argv"] == ["lkswarm", "run", "--api-secret", "***", "--api-secret=***", "--ray", "local"]
    assert sys.argv == argv and os.environ["LIVEKIT_API_SECRET"] == SECRET  # restored for the run itself
