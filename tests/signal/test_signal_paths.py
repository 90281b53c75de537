"""``--signal-path``: parsing, and how a mix deals paths over arrivals."""

from __future__ import annotations

import pytest

from lkswarm.config import RunConfig
from lkswarm.signal.paths import describe, parse_signal_path, signal_path_for


def test_single_paths_and_mixes_parse_with_reduced_weights() -> None:
    assert parse_signal_path("auto") == (("auto", 1),)
    assert parse_signal_path("v0") == (("v0", 1),)
    assert parse_signal_path("v1:70,v0:30") == (("v1", 7), ("v0", 3))
    assert parse_signal_path(" v1:50 , auto:50 ") == (("v1", 1), ("auto", 1))
    assert describe(parse_signal_path("v1:70,v0:30")) == "v1:7,v0:3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v2", "'v2'"),
        ("v1,v0", "needs a weight"),
        ("v1:70,v1:30", "appears twice"),
        ("v1:0,v0:10", "must be > 0"),
        ("v1:x,v0:1", "not a whole number"),
        ("v1:9999,v0:9998", "too fine"),
    ],
)
def test_bad_paths_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_signal_path(text)
    with pytest.raises(ValueError, match=message):
        RunConfig(signal_path=text)


def test_a_70_30_mix_holds_7_and_3_in_any_10_consecutive_arrivals() -> None:
    weights = parse_signal_path("v1:70,v0:30")
    paths = [signal_path_for(index, weights) for index in range(1000)]
    for start in range(len(paths) - 10):
        window = paths[start : start + 10]
        assert window.count("v1") == 7, (start, window)
    # the choice is a function of the index alone: the same on every worker and for every replacement
    assert [signal_path_for(index, weights) for index in range(500, 520)] == paths[500:520]


def test_a_three_way_mix_is_exact_per_period() -> None:
    weights = parse_signal_path("v1:2,v0:1,auto:1")
    paths = [signal_path_for(index, weights) for index in range(400)]
    assert (paths.count("v1"), paths.count("v0"), paths.count("auto")) == (200, 100, 100)


def test_the_default_is_what_todays_sdks_do() -> None:
    config = RunConfig()
    assert config.signal_path == "auto" and config.join_request_compression == "gzip"
