"""The benchmark runner's pure parts: interleaved repeats and their verdict (fixed numbers, no timing)."""

from __future__ import annotations

from itertools import count

import pytest

from bench.run import Comparison, Timing, interleaved, seconds, timed


def _comparison(ours: tuple[float, ...], baseline: tuple[float, ...]) -> Comparison:
    return Comparison(ours=Timing(ours), baseline=Timing(baseline))


def test_timing_median_and_spread() -> None:
    timing = Timing((3.0, 1.0, 2.0, 10.0))
    assert timing.median == 2.5
    assert timing.spread == (1.0, 10.0)


def test_overlapping_spreads_are_no_measurable_difference() -> None:
    comparison = _comparison((10.0, 11.0, 12.0), (10.5, 11.5, 12.5))
    assert comparison.ratio == pytest.approx(11.5 / 11.0)
    assert comparison.ratio_spread == pytest.approx((10.5 / 12.0, 12.5 / 10.0))
    assert comparison.verdict == "no measurable difference"
    assert comparison.summary == "1.05x (0.875..1.250x): no measurable difference"


def test_a_ratio_spread_that_only_touches_one_is_no_measurable_difference() -> None:
    assert _comparison((1.0, 2.0), (2.0, 3.0)).verdict == "no measurable difference"  # low = 2 / 2
    assert _comparison((2.0, 3.0), (1.0, 2.0)).verdict == "no measurable difference"  # high = 2 / 2


def test_disjoint_spreads_say_who_is_faster() -> None:
    assert _comparison((1.0, 1.1, 1.2), (2.0, 2.1, 2.2)).verdict == "ours faster"
    assert _comparison((2.0, 2.1, 2.2), (1.0, 1.1, 1.2)).verdict == "ours slower"


def test_interleaved_alternates_and_keeps_call_order() -> None:
    calls = count()
    comparison = interleaved(lambda: float(next(calls)), lambda: float(next(calls)) + 0.5, repeats=3)
    assert comparison.ours.seconds == (0.0, 2.0, 4.0)
    assert comparison.baseline.seconds == (1.5, 3.5, 5.5)


def test_seconds_cell() -> None:
    assert seconds(1.23456) == "1.235"
    assert seconds(1.23456, (1.2, 1.3)) == "1.235 (1.200..1.300)"


def test_timed_calls_once_and_returns_seconds() -> None:
    import time

    calls = []
    elapsed = timed(lambda: (calls.append(1), time.sleep(0.05)))()
    assert calls == [1]
    assert 0.05 <= elapsed < 5.0  # seconds, not ns or ms


def test_the_paired_cost_is_the_median_ratio_within_pairs_not_the_ratio_of_medians() -> None:
    from bench.bench_stats_cost import paired_cost

    # The machine's state moves the times 3x from pair to pair; within every pair ours is 2% slower.
    baseline = [1.0, 3.0, 2.0, 1.5, 2.5]
    cost, low, high = paired_cost([1.02 * b for b in baseline], baseline)
    assert cost == pytest.approx(0.02) and low == pytest.approx(0.02) and high == pytest.approx(0.02)
    cost, low, high = paired_cost([1.0, 1.1, 0.9, 1.2, 1.0], [1.0] * 5)
    assert cost == pytest.approx(0.0) and low < 0.0 < high
