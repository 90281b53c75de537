"""The declared field rules (`lkswarm.fields`) and the configuration built on them, without pydantic."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from lkswarm.config import RunConfig, Stage, parse_duration_s
from lkswarm.errors import ConfigError
from lkswarm.fields import (
    FieldError,
    Rule,
    as_any,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_str,
    declare,
    from_mapping,
    json_fields,
    validate_fields,
)


@dataclasses.dataclass(frozen=True)
class _Record:
    count: int = declare(1, as_int, ge=0, le=10)
    share: float = declare(0.5, as_float, gt=0, le=1)
    on: bool = declare(False, as_bool)
    name: str = declare("x", as_str, max_length=3)
    mode: str = declare("a", as_choice, choices=("a", "b"))
    limit: int | None = declare(None, as_int, optional=True, ge=1)
    items: tuple[int, ...] = declare((), as_any, before=tuple)

    def __post_init__(self) -> None:
        validate_fields(self)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (dict(count="7"), ("count", 7)),
        (dict(count=3.0), ("count", 3)),
        (dict(share=1), ("share", 1.0)),
        (dict(share="0.25"), ("share", 0.25)),
        (dict(on="yes"), ("on", True)),
        (dict(on=0), ("on", False)),
        (dict(limit=None), ("limit", None)),
        (dict(items=[1, 2]), ("items", (1, 2))),
    ],
)
def test_values_are_converted_to_their_kind(changes: dict[str, Any], expected: tuple[str, Any]) -> None:
    record = _Record(**changes)
    name, value = expected
    assert getattr(record, name) == value and type(getattr(record, name)) is type(value)


@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        (dict(count="many"), ("count",), "must be a whole number, not 'many'"),
        (dict(count=True), ("count",), "whole number"),
        (dict(count=2.5), ("count",), "whole number"),
        (dict(count=11), ("count",), "at most 10"),
        (dict(count=-1), ("count",), "at least 0"),
        (dict(share=0), ("share",), "greater than 0"),
        (dict(share=float("nan")), ("share",), "finite number"),
        (dict(share=False), ("share",), "must be a number"),
        (dict(on="maybe"), ("on",), "true or false"),
        (dict(name=5), ("name",), "must be text"),
        (dict(name="long"), ("name",), "at most 3 characters"),
        (dict(mode="c"), ("mode",), "must be 'a' or 'b', not 'c'"),
        (dict(limit=0), ("limit",), "at least 1"),
    ],
)
def test_a_broken_rule_names_its_key(changes: dict[str, Any], loc: tuple[str, ...], words: str) -> None:
    with pytest.raises(FieldError, match=words) as caught:
        _Record(**changes)
    assert caught.value.loc == loc and str(caught.value).startswith(f"{loc[0]}: ")
    # One error tree: a usage error, and a ValueError for callers that catch the stdlib's.
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)


def test_unknown_keys_and_nested_errors_are_located() -> None:
    with pytest.raises(FieldError, match=r"^colour: not a known setting$"):
        from_mapping(_Record, {"count": 1, "colour": "red"})
    with pytest.raises(FieldError) as caught:
        RunConfig(stages=[{"duration_s": "2s", "target": 3}, {"duration_s": "1s", "target": -1}])
    assert caught.value.loc == ("stages", 1, "target")
    with pytest.raises(FieldError, match=r"^stages\.0\.target: missing$"):
        RunConfig.from_mapping({"stages": [{"duration_s": 1}]})
    with pytest.raises(FieldError, match=r"^bogus: not a known setting$"):
        RunConfig.from_mapping({"bogus": 1})
    # A rule between fields has no single key: its message stands alone.
    with pytest.raises(FieldError, match=r"^reconnect_storm_at \(20 s\) must fall inside the run") as between:
        RunConfig(duration_s="10s", reconnect_storm_at_s="20s")
    assert between.value.loc == ()


def test_rule_bounds_apply_after_the_conversion() -> None:
    rule = Rule(as_float, gt=0, before=lambda value: {"1m": 60.0}.get(value, value))
    assert rule.apply("1m") == 60.0
    with pytest.raises(ValueError, match="greater than 0"):
        rule.apply(0)


def test_the_configuration_round_trips_through_json_and_replace() -> None:
    config = RunConfig(
        participants=6,
        audio_publishers="all",
        rate=5,
        duration_s="2m",
        stages=[{"duration_s": "30s", "target": 4}, Stage(duration_s=90, target=0)],
    )
    assert config.audio_publishers == 6 and config.rate == 5.0 and isinstance(config.rate, float)
    assert config.duration_s == 120.0  # the stages set the run length
    data = json.loads(json.dumps(config.to_json()))
    assert data["stages"] == [{"duration_s": 30.0, "target": 4}, {"duration_s": 90.0, "target": 0}]
    assert RunConfig.from_mapping(data) == config
    changed = config.replace(url="ws://127.0.0.1:7880")
    assert changed.url == "ws://127.0.0.1:7880" and changed.stages == config.stages
    with pytest.raises(FieldError, match="rooms: must be at least 1"):
        config.replace(rooms=0)  # a change is checked as a new configuration is
    assert json_fields(Stage(duration_s=1, target=2)) == {"duration_s": 1.0, "target": 2}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        # Go's time.ParseDuration form, as `lk perf load-test --duration` takes it
        ("10m30s", 630.0),
        ("1h30m", 5400.0),
        ("2m500ms", 120.5),
        (" 1h2m3.5s ", 3723.5),
    ],
)
def test_durations_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)
    assert RunConfig(duration_s=text).duration_s == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10m30", "m30s", "1h-2m", "", "1x", "30 s 2m", "-5s"])
def test_a_malformed_duration_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid duration .*10m30s"):
        parse_duration_s(text)


def test_a_room_name_is_checked_in_utf8_bytes_with_the_suffix_of_several_rooms() -> None:
    """livekit-server refuses room names past 256 bytes at every join (HTTP 400): a name it will refuse is a
    usage error before the run, not every participant failed after it."""
    assert RunConfig(room="é" * 128).room_name(0) == "é" * 128  # 256 bytes
    assert RunConfig(room="a" * 254, rooms=10).room_name(9) == "a" * 254 + "-9"
    for fields in (dict(room="é" * 129), dict(room="a" * 256, rooms=2), dict(room=" "), dict(room="a\tb")):
        with pytest.raises(FieldError):
            RunConfig(**fields)
