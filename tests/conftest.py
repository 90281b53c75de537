"""Shared fixtures. Integration tests run against a real livekit-server (installed by `make build`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lkswarm.auth import Credentials
from lkswarm.server import LocalServer, find_binary

# A 32+ character secret, as livekit-server wants outside dev mode.
TEST_CREDENTIALS = Credentials("lkswarm-test", "lkswarm-test-secret-0123456789abcdef")


@pytest.fixture(scope="session")
def credentials() -> Credentials:
    return TEST_CREDENTIALS


@pytest.fixture(scope="session")
def livekit_server(credentials: Credentials) -> Iterator[LocalServer]:
    """One real livekit-server v1.13.5 on 127.0.0.1 for the whole session."""
    find_binary()  # fails loudly (no skip) when `make build` did not install it
    server = LocalServer(credentials)
    server.start()
    try:
        yield server
    finally:
        server.stop()
