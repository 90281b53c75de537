"""``--server-cpus``: parsing the value and what a limit reports (no cgroup is made, no process signalled)."""

from __future__ import annotations

import pytest

from lkswarm.app.cpu_limit import CpuLimit, parse_cpus
from lkswarm.errors import ConfigError


def test_one_value_is_one_search() -> None:
    assert parse_cpus("0.5") == [0.5]
    assert parse_cpus("2") == [2.0]


def test_a_list_is_a_core_sweep_in_the_order_given() -> None:
    assert parse_cpus("0.5,1,2") == [0.5, 1.0, 2.0]
    assert parse_cpus(" 4, 0.25 ") == [4.0, 0.25]


@pytest.mark.parametrize(
    ("text", "named"),
    [("abc", "'abc'"), ("0.5,x1,2", "'x1'"), ("1,,2", "''"), ("1, two", "'two'")],
)
def test_a_part_that_is_not_a_number_is_named(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cpus(text)
    assert str(caught.value) == f"--server-cpus: {named} is not a number of cores"


@pytest.mark.parametrize(("text", "shown"), [("0", "0"), ("0.001", "0.001"), ("-1", "-1"), ("1,5000", "5000")])
def test_a_value_outside_the_range_is_refused(text: str, shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cpus(text)
    assert str(caught.value) == f"--server-cpus: {shown} is outside 0.01 .. 4096 cores"


@pytest.mark.parametrize("text", ["nan", "inf", "0.5,-inf"])
def test_non_finite_values_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"is outside 0\.01 \.\. 4096 cores"):
        parse_cpus(text)


def test_the_range_ends_are_allowed() -> None:
    assert parse_cpus("0.01,4096") == [0.01, 4096.0]


def test_a_limit_describes_itself_and_releases_without_a_cgroup() -> None:
    limit = CpuLimit(0.5, "SIGSTOP/SIGCONT duty cycle")
    assert limit.describe() == {"cpus": 0.5, "method": "SIGSTOP/SIGCONT duty cycle"}
    limit.release()
    assert limit._stop.is_set()
    assert limit.cgroup is None
