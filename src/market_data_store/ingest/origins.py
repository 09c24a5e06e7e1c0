"""Which items of a request each row stands for, where a key came more than once.

A request may carry one key twice (a correction sent after the bar it corrects): the
store writes one row per key, with the values of one of its items (the later; for a
CSV restore, the latest ``updated_at``). From the first repeated key on, the rows'
positions are not the items', and a row stands for every item of its key: if the
database refuses it, none of them is stored (an item replaced in the same request is
not written on its own). A 201 names what the database refused by the items of the
request (``dead_lettered_indices``), which the client hands back to its caller:
``origins`` keeps that mapping. It exists only for such a request, built once after
the rows; a request without a repeated key is its rows, as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


class OnePerKey(list[T]):
    """The rows of a request in which some key came more than once: one per key, in
    the order of each key's first item; row ``i`` stands for the items
    ``origins[i]`` of the request (ascending; it holds the values of one of them)."""

    __slots__ = ("origins",)

    def __init__(self, rows: Iterable[T], origins: list[list[int]]) -> None:
        super().__init__(rows)
        self.origins = origins


def one_per_key(
    rows: list[T],
    key: Callable[[T], Hashable],
    replaces: Callable[[T, T], bool] | None = None,
) -> list[T]:
    """``rows`` (row ``i`` made from item ``i`` of the request) with one row per key:
    ``rows`` itself when no key repeats, else a ``OnePerKey``. Of two rows of one key
    the later is kept, or, with ``replaces``, the later only if ``replaces(later,
    kept)``."""
    items: dict[Hashable, list[int]] = {}
    for index, row in enumerate(rows):
        items.setdefault(key(row), []).append(index)
    if len(items) == len(rows):
        return rows
    origins = list(items.values())
    return OnePerKey([rows[_kept(group, rows, replaces)] for group in origins], origins)


def _kept(group: list[int], rows: list[T], replaces: Callable[[T, T], bool] | None) -> int:
    """Which of a key's rows (``group``, ascending) is written."""
    if replaces is None:
        return group[-1]
    at = group[0]
    for index in group[1:]:
        if replaces(rows[index], rows[at]):
            at = index
    return at


def item_indices(rows: Sequence[object], offsets: Iterable[int]) -> list[int]:
    """The request's items (by index, ascending) that rows ``offsets`` of ``rows``
    (what ``one_per_key`` returned) stand for."""
    if not isinstance(rows, OnePerKey):
        return sorted(offsets)
    origins = rows.origins
    return sorted(item for offset in offsets for item in origins[offset])
