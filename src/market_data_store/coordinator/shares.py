"""Each owner's part of one coordinator (a tenant's), bounded: no owner fills the queue.

An owner holds the items it submitted until they are finished (written or
dead-lettered): queued or being written. ``reserve`` counts a request's items before
it is submitted (so concurrent requests of one owner cannot all pass the check),
``release`` ends the reservation once the submit returned (or failed) and ``track``
then holds the submitted ticket's items. Finished items are found lazily against the
coordinator's ``Completions`` watermark: no callback per batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from .completions import Completions, Ticket


@dataclass
class _Holding:
    reserved: int = 0
    submitted: deque[tuple[int, int]] = field(default_factory=deque)  # (end, count)
    counted: int = 0  # the sum of the counts in ``submitted``


class Shares:
    """At most ``cap`` items held per owner (None: no cap): a request of more than
    ``cap`` items never fits (the caller refuses it as too large). ``acquire`` waits up
    to ``patience`` s for room, as a submit to a full queue does."""

    def __init__(self, completions: Completions, cap: int | None, patience: float = 0.0) -> None:
        self.cap = cap
        self.patience = patience
        self._completions = completions
        self._owners: dict[str, _Holding] = {}

    def held(self, owner: str) -> int:
        """Items of ``owner`` reserved or submitted and not finished yet."""
        holding = self._owners.get(owner)
        if holding is None:
            return 0
        self._settle(holding)
        total = holding.reserved + holding.counted
        if not total:
            del self._owners[owner]
        return total

    def reserve(self, owner: str, count: int) -> bool:
        """Count ``count`` items for ``owner``, unless that takes it beyond the cap
        (False: nothing counted)."""
        if self.cap is None:
            return True
        if self.held(owner) + count > self.cap:
            return False
        self._owners.setdefault(owner, _Holding()).reserved += count
        return True

    async def acquire(self, owner: str, count: int) -> bool:
        """``reserve``, waiting up to ``patience`` s for ``owner``'s items to finish
        until it fits; False when it still does not (nothing counted), at once for no
        patience or a request larger than the cap."""
        if self.reserve(owner, count):
            return True
        if self.patience <= 0 or self.cap is None or count > self.cap:
            return False
        try:
            async with asyncio.timeout(self.patience):
                while not self.reserve(owner, count):
                    await self._completions.advanced()
        except TimeoutError:
            return False
        return True

    def track(self, owner: str, ticket: Ticket) -> None:
        """``ticket``'s items are ``owner``'s until they are finished."""
        if self.cap is None:
            return
        if ticket.end > self._completions.done_until:  # not finished yet
            holding = self._owners.setdefault(owner, _Holding())
            holding.submitted.append((ticket.end, ticket.count))
            holding.counted += ticket.count

    def release(self, owner: str, count: int) -> None:
        """End a reservation of ``count`` (its items submitted, or refused)."""
        holding = self._owners.get(owner)
        if holding is not None:
            holding.reserved = max(0, holding.reserved - count)
            self.held(owner)  # forget an owner holding nothing

    def _settle(self, holding: _Holding) -> None:
        done = self._completions.done_until
        submitted = holding.submitted
        while submitted and submitted[0][0] <= done:
            holding.counted -= submitted.popleft()[1]
