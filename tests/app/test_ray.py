"""`--ray`: the pieces that need no Ray cluster (lkswarm.app.ray_engine, lkswarm.app.ray_actor, the CLI's checks)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from typer.testing import CliRunner

from lkswarm.app import ray_engine
from lkswarm.app.ray_actor import GeneratorActor, node_bind_ip
from lkswarm.app.ray_engine import (
    INSTALL_HINT,
    check_ray_run,
    import_ray,
    parse_actor_count,
    parse_ray_address,
    plan_actors,
    run_on_ray,
)
from lkswarm.auth import Credentials
from lkswarm.cli.commands import app
from lkswarm.config import RunConfig
from lkswarm.errors import ClusterError, ConfigError


def test_ray_addresses_are_local_auto_or_a_ray_client_url() -> None:
    assert parse_ray_address("local") == "local" and parse_ray_address("auto") == "auto"
    assert parse_ray_address("ray://head.example:10001") == "ray://head.example:10001"
    for bad in ("ray://head", "http://head:10001", "head:10001", "ray://:10001", "ray://head:port"):
        with pytest.raises(ConfigError, match="local, auto or ray://HOST:PORT"):
            parse_ray_address(bad)


def test_a_cluster_run_needs_the_servers_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_URL", raising=False)
    check_ray_run(RunConfig(), "local")  # the embedded server, on this machine
    for address in ("auto", "ray://head:10001"):
        with pytest.raises(ConfigError, match="--url"):
            check_ray_run(RunConfig(), address)
        check_ray_run(RunConfig(url="ws://sfu.example:7880"), address)
    with pytest.raises(ConfigError, match="single generator process"):
        check_ray_run(RunConfig(probe_impair="delay=10ms"), "local")


def test_actor_count_defaults_to_one_per_cluster_cpu_and_refuses_too_few() -> None:
    assert parse_actor_count(None) is None and parse_actor_count("auto") is None and parse_actor_count("3") == 3
    with pytest.raises(ConfigError, match="number or 'auto'"):
        parse_actor_count("many")
    assert plan_actors(None, [2.0, 2.0], rooms=10, per_node=None) == 4  # one per CPU
    assert plan_actors(None, [2.0, 2.0], rooms=3, per_node=None) == 3  # at most one per room
    assert plan_actors(None, [8.0, 8.0], rooms=10, per_node=2) == 4  # capped per node
    assert plan_actors(3, [2.0, 2.0], rooms=10, per_node=None) == 3
    with pytest.raises(ConfigError) as refused:
        plan_actors(5, [2.0, 2.0], rooms=10, per_node=None)
    assert str(refused.value) == (
        "--workers 5: the Ray cluster has 4 CPU(s) on 2 node(s), room for 4 actor(s) of one CPU; "
        "add nodes or ask for fewer workers"
    )
    with pytest.raises(ConfigError, match="at most 1 per node"):
        plan_actors(3, [2.0, 2.0], rooms=10, per_node=1)
    with pytest.raises(ConfigError, match="at least as many rooms"):
        plan_actors(3, [4.0], rooms=2, per_node=None)
    with pytest.raises(ConfigError, match="at least 1"):
        plan_actors(0, [4.0], rooms=2, per_node=None)
    with pytest.raises(ConfigError, match="--workers-per-node must be at least 1"):
        plan_actors(None, [4.0], rooms=2, per_node=0)


def test_media_binds_to_the_actors_node_unless_the_server_is_on_loopback() -> None:
    assert node_bind_ip("127.0.0.1", "10.0.0.7", "ws://127.0.0.1:7880") == "127.0.0.1"  # --ray local
    assert node_bind_ip("127.0.0.1", "10.0.0.7", "ws://localhost:7880") == "127.0.0.1"
    assert node_bind_ip("127.0.0.1", "10.0.0.7", "wss://sfu.example") == "10.0.0.7"  # the default, per node
    assert node_bind_ip("10.0.0.9", "10.0.0.7", "wss://sfu.example") == "10.0.0.7"  # another node's address
    assert node_bind_ip("10.0.0.7", "10.0.0.7", "ws://10.0.0.1:7880") == "10.0.0.7"  # its own, as configured


def test_without_ray_installed_ray_says_in_one_line_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray now fails
    with pytest.raises(ConfigError) as missing:
        import_ray()
    assert str(missing.value) == INSTALL_HINT and "pip install 'lkswarm[ray]'" in INSTALL_HINT
    result = CliRunner().invoke(app, ["run", "--ray", "local", "--rooms", "2", "--quiet"])
    assert result.exit_code == 2
    assert "pip install 'lkswarm[ray]'" in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


def test_ray_options_are_refused_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_URL", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--workers-per-node", "2", "--quiet"])
    assert result.exit_code == 2 and "add --ray ADDRESS" in result.output
    result = runner.invoke(app, ["run", "--ray", "auto", "--quiet"])
    assert result.exit_code == 2 and "--url" in result.output
    result = runner.invoke(app, ["run", "--ray", "head:10001", "--quiet"])
    assert result.exit_code == 2 and "ray://HOST:PORT" in result.output


class _FakeRay(types.ModuleType):
    """Ray as far as `run_on_ray` reads it before it places anything: a connected cluster of given CPUs."""

    def __init__(self, cpus: list[float]) -> None:
        super().__init__("ray")
        self.cpus = cpus
        self.shut = False

    def is_initialized(self) -> bool:
        return True

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True, "Resources": {"CPU": c}} for c in self.cpus] + [{"Alive": False, "Resources": {}}]


def test_too_few_cluster_cpus_are_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, credentials: Credentials
) -> None:
    fake = _FakeRay([2.0])
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_engine, "RayDriver", None)  # nothing past the count may run
    with pytest.raises(ConfigError, match="--workers 3: the Ray cluster has 2 CPU"):
        run_on_ray(RunConfig(rooms=4), credentials, address="local", workers=3)


class _NoCluster(types.ModuleType):
    """Ray with no cluster to join: ``init`` raises as Ray 2.60 does for ``auto`` with nothing running."""

    def __init__(self) -> None:
        super().__init__("ray")

    def is_initialized(self) -> bool:
        return False

    def init(self, **_: Any) -> None:
        raise ConnectionError(
            "Could not find any running Ray instance. Please specify the one to connect to by setting `--address`"
            " flag or `RAY_ADDRESS` environment variable.\nmore detail"
        )


def test_a_cluster_that_cannot_be_joined_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's ConnectionError is no LkswarmError: `run --ray auto` and `capacity --ray auto` without a cluster
    ended in a traceback."""
    monkeypatch.setattr(ray_engine, "import_ray", _NoCluster)
    with pytest.raises(ClusterError, match=r"^--ray auto: could not join the Ray cluster: Could not find any"):
        ray_engine.connect(_NoCluster(), "auto")
    runner = CliRunner()
    for command in (["run"], ["capacity", "--max", "10"]):
        result = runner.invoke(app, [*command, "--ray", "auto", "--url", "ws://127.0.0.1:9", "--quiet"])
        assert result.exit_code == 1, (command, result.output, result.exception)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "could not join the Ray cluster" in lines[0], (command, result.output)


def test_the_actor_class_has_no_coroutine_method() -> None:
    # Ray makes a class with any `async def` method an async actor, whose calls share one event loop that
    # `run` would block: `wait_ready`, `sample` and `stop` must run beside it.
    import inspect

    assert not [name for name, f in inspect.getmembers(GeneratorActor) if inspect.iscoroutinefunction(f)]
