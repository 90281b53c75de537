"""Shared fixtures. Integration tests run against a real livekit-server (installed by `make build`).

Every test that needs the server carries the ``integration`` marker: those that use the
``livekit_server`` fixture get it here, the rest name it themselves. A test without it
opens no network socket, binds no media socket and starts no server: the guard below
fails it if it tries (and `make test` runs that part of the suite in a network namespace
of its own, where nothing can connect anywhere).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

from lkswarm import _core
from lkswarm.app.server import LocalServer, find_binary
from lkswarm.auth import Credentials

INTEGRATION_FIXTURES = frozenset({"livekit_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _socket_free_unless_integration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise AssertionError(f"{request.node.nodeid} uses the network or a server: mark it integration")

    real_init = socket.socket.__init__

    def guarded_init(
        self: socket.socket, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None
    ) -> None:
        if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
            refuse()
        real_init(self, family, type, proto, fileno)

    monkeypatch.setattr(socket.socket, "__init__", guarded_init)
    monkeypatch.setattr(_core, "MediaHub", refuse)
    monkeypatch.setattr(LocalServer, "start", refuse)


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
