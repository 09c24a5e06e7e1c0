"""The transition rules, as plain arithmetic."""

from __future__ import annotations

import pytest

from market_data_store.coordinator.events import BackpressureLevel
from market_data_store.coordinator.watermarks import Transition, WatermarkTracker

OK, SOFT, HARD = BackpressureLevel.ok, BackpressureLevel.soft, BackpressureLevel.hard


def one_by_one(tracker: WatermarkTracker, start: int, end: int) -> list[Transition]:
    out: list[Transition] = []
    for size in range(start + 1, end + 1):
        out.extend(tracker.rise(size - 1, size))
    return out


def test_rising_one_by_one_goes_soft_then_hard() -> None:
    t = WatermarkTracker(high=8, low=4)
    assert one_by_one(t, 0, 10) == [Transition(SOFT, 5), Transition(HARD, 8)]
    assert t.level is HARD


def test_bulk_rise_reports_the_same_transitions_as_one_by_one() -> None:
    for end in range(11):
        single, bulk = WatermarkTracker(8, 4), WatermarkTracker(8, 4)
        assert bulk.rise(0, end) == one_by_one(single, 0, end), end


def test_bulk_rise_from_soft_zone() -> None:
    t = WatermarkTracker(8, 4)
    t.rise(0, 6)
    assert t.rise(6, 9) == [Transition(HARD, 8)]
    assert t.rise(9, 10) == []


def test_no_soft_zone_when_watermarks_are_adjacent() -> None:
    t = WatermarkTracker(high=5, low=4)
    assert one_by_one(t, 0, 6) == [Transition(HARD, 5)]


def test_recovery_only_after_soft_or_hard_and_only_at_or_below_low() -> None:
    t = WatermarkTracker(8, 4)
    assert t.fall(0) is None  # never left ok
    t.rise(0, 9)
    assert t.fall(5) is None  # still above low: stays hard, no soft on the way down
    assert t.fall(4) == Transition(OK, 4, "queue_recovered")
    assert t.fall(3) is None  # once
    assert t.rise(4, 5) == [Transition(SOFT, 5)]  # re-armed


def test_hot_path_threshold_moves_with_the_level() -> None:
    t = WatermarkTracker(8, 4)
    assert t.next_rise == 5
    t.rise(4, 5)
    assert t.next_rise == 8
    t.rise(7, 8)
    assert t.next_rise > 1_000_000
    t.fall(2)
    assert t.next_rise == 5


@pytest.mark.parametrize(("high", "low"), [(4, 4), (4, 5), (0, 0), (5, -1)])
def test_invalid_watermarks_rejected(high: int, low: int) -> None:
    with pytest.raises(ValueError, match="watermarks"):
        WatermarkTracker(high, low)
