"""Which item of a request each row is, where a key came more than once.

A request may carry one key twice (a correction sent after the bar it corrects): the
store writes one row per key, so from the first repeated key on, the rows' positions
are not the items'. A 201 names the rows the database refused by the index of their
item in the request (``dead_lettered_indices``), which the client maps back to what
it sent: ``origins`` keeps that mapping. It exists only for such a request, built
once after the rows; a request without a repeated key is its rows, as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


class OnePerKey(list[T]):
    """The rows of a request in which some key came more than once: one per key, in
    the order of each key's first item; row ``i`` holds the values of item
    ``origins[i]`` of the request (the one kept)."""

    __slots__ = ("origins",)

    def __init__(self, rows: Iterable[T], origins: list[int]) -> None:
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
    kept: dict[Hashable, int] = {}
    for index, row in enumerate(rows):
        k = key(row)
        at = kept.get(k)
        if at is None or replaces is None or replaces(row, rows[at]):
            kept[k] = index
    if len(kept) == len(rows):
        return rows
    origins = list(kept.values())
    return OnePerKey([rows[i] for i in origins], origins)


def item_indices(rows: Sequence[object], offsets: Iterable[int]) -> list[int]:
    """The request's items (by index, ascending) whose values rows ``offsets`` of
    ``rows`` hold (what ``one_per_key`` returned)."""
    origins = rows.origins if isinstance(rows, OnePerKey) else None
    return sorted(offsets) if origins is None else sorted(origins[i] for i in offsets)
