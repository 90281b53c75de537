"""The report's histogram mean and percentiles are hdrh's own figures, without hdrh's walk over every bucket."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from lkswarm.metrics import mean_of, new_histogram, record_ms, summarize, value_at_percentile

# Microsecond values from the bottom of the range to an hour, where hdrh's walk is longest.
values_us = st.lists(st.integers(min_value=1, max_value=3_600_000_000), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None)
@given(values=values_us, repeat=st.integers(min_value=1, max_value=5))
def test_mean_of_equals_hdrh_get_mean_value(values: list[int], repeat: int) -> None:
    histogram = new_histogram()
    for value in values:
        histogram.record_value(value, repeat)
    assert mean_of(histogram) == histogram.get_mean_value()


def test_an_empty_histogram_has_mean_zero_and_summarize_uses_the_same_mean() -> None:
    histogram = new_histogram()
    assert mean_of(histogram) == 0.0
    for value_ms in (0.5, 2.0, 2.0, 40.0, 3_000_000.0):
        record_ms(histogram, value_ms)
    assert summarize(histogram)["mean"] == round(histogram.get_mean_value() / 1000, 3)


@settings(max_examples=25, deadline=None)
@given(values=values_us, repeat=st.integers(min_value=1, max_value=5))
def test_value_at_percentile_equals_hdrh_for_every_percentile_the_report_reads(values: list[int], repeat: int) -> None:
    histogram = new_histogram()
    for value in values:
        histogram.record_value(value, repeat)
    for percentile in (0.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert value_at_percentile(histogram, percentile) == histogram.get_value_at_percentile(percentile)


def test_a_decoded_histogram_summarizes_as_the_one_it_was_encoded_from() -> None:
    # The merge path decodes the workers' histograms, whose counts arrays may be truncated.
    histogram = new_histogram()
    for value_ms in (0.001, 1.0, 2.5, 2.5, 900.0):
        record_ms(histogram, value_ms)
    decoded = HdrHistogram.decode(histogram.encode())
    assert summarize(decoded) == summarize(histogram)
    assert summarize(decoded)["p50"] == 2.501  # the highest equivalent value of 2,500 µs, in ms
