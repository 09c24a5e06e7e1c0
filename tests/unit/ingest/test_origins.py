"""One row per key of a request, and which items each row stands for (``ingest.origins``)."""

from __future__ import annotations

from market_data_store.ingest import OnePerKey, item_indices, one_per_key


def test_rows_without_a_repeated_key_are_returned_as_they_are() -> None:
    rows = [("a", 1), ("b", 2)]
    assert one_per_key(rows, lambda r: r[0]) is rows
    assert item_indices(rows, [1, 0]) == [0, 1]


def test_a_repeated_key_keeps_its_first_place_and_its_later_item() -> None:
    rows = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("c", 5)]
    kept = one_per_key(rows, lambda r: r[0])
    assert isinstance(kept, OnePerKey)
    assert kept == [("a", 3), ("b", 2), ("c", 5)]
    assert kept.origins == [[0, 2], [1], [3, 4]]
    # rows 0 and 2 of what was written stand for items 0, 2, 3 and 4 of the request
    assert item_indices(kept, [2, 0]) == [0, 2, 3, 4]
    assert item_indices(kept, [1]) == [1]


def test_replaces_decides_which_of_two_rows_of_a_key_is_kept() -> None:
    rows = [("a", 5), ("a", 3), ("a", 5), ("b", 1)]
    kept = one_per_key(rows, lambda r: r[0], lambda new, old: new[1] >= old[1])
    assert kept == [("a", 5), ("b", 1)]
    assert isinstance(kept, OnePerKey)
    assert kept.origins == [[0, 1, 2], [3]]
    assert kept[0] is rows[2]  # of two alike, the later
