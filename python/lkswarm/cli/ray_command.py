"""``--ray`` on ``lkswarm run`` and ``lkswarm capacity``: its checks and its run with one live view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.cli.output import combined_live_view, stdout
from lkswarm.config import RunConfig
from lkswarm.errors import ConfigError


def check_ray_options(config: RunConfig, ray: str | None, workers_per_node: int | None) -> str | None:
    """The Ray address, checked (a usage error, exit 2, before anything starts); None without ``--ray``.

    Without Ray installed, the error says in one line how to install it."""
    if ray is None:
        if workers_per_node is not None:
            raise ConfigError("--workers-per-node caps the actors of a --ray run: add --ray ADDRESS")
        return None
    from lkswarm.app.ray_engine import check_ray_run, import_ray, parse_ray_address

    address = parse_ray_address(ray)
    check_ray_run(config, address)
    import_ray()
    if workers_per_node is not None and workers_per_node < 1:
        raise ConfigError("--workers-per-node must be at least 1")
    return address


def run_ray_with_view(
    config: RunConfig,
    credentials: Credentials,
    *,
    address: str,
    workers: str | None,
    workers_per_node: int | None,
    announce: Callable[[LocalServer], None],
    thresholds: Any,
    prometheus: str | None,
    quiet: bool,
) -> Any:
    """``run --ray ADDRESS``: the actors' merged run, with one live view of them all on a terminal."""
    from lkswarm.app.ray_engine import parse_actor_count, run_on_ray

    combined_view = combined_live_view(quiet)

    def on_plan(actors: int, nodes: int) -> None:
        if not quiet:
            stdout.print(f"Ray ({address}): {actors} generator actor(s) over {nodes} node(s), rooms split among them")
        if combined_view is not None:
            combined_view.open(config.duration_s)

    try:
        return run_on_ray(
            config,
            credentials,
            address=address,
            workers=parse_actor_count(workers),
            workers_per_node=workers_per_node,
            on_server=announce,
            thresholds=thresholds,
            prometheus=prometheus,
            on_sample=combined_view.on_sample if combined_view is not None else None,
            on_plan=on_plan,
        )
    finally:
        if combined_view is not None:
            combined_view.close()
