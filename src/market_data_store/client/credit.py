"""The client's side of the store's credit: how many bars may be out at once.

Every answer of the store carries ``credit``: how many bars this producer (named by
``x-mds-producer``) may have sent and not yet had answered. With ``wait_commit``
an answer comes when the bars are committed, so the window is clocked by the
store's own writes (TCP's ack clocking): when the database slows down, answers
slow down and so does the client, with nothing to tune; the store resizes the
window to keep its queue short and never empty, and shares it among producers.

A batch larger than the window goes out in parts (``part``): of the whole credit
when it is small (under ``PIPELINE_FROM``: many producers share the window, or
the store is slow, and the others' requests keep it busy while this one waits;
fewer, larger requests cost the store and the client less per bar), else of
half of it (at least ``MIN_PART``), so that two requests are out while one is
written and the queue never waits for a round trip; and never more than half
the store's queue (``capacity``, in every answer: a request larger than the room
under the high watermark would wait for the queue to empty and then make it
``hard``). The parts of a batch are of even size (5,000 bars under a 4,000 limit
go as 2 x 2,500, not 4,000 + 1,000: each request costs the store the same).
Before the first answer nothing is known: one small request (``INITIAL_PART``
bars) goes out alone and its answer opens the window. A store that sends no
credit (an older one) leaves the window open: ``max_in_flight`` alone bounds the
client then.
"""

from __future__ import annotations

import asyncio
from collections import deque

INITIAL_PART = 100
"""Bars of the one request that goes out before the store said anything."""
PIPELINE_FROM = 2000
"""From this credit on, a part is half of it (two requests out at once)..."""
MIN_PART = 250
"""...but not smaller than this (a smaller request costs more than it moves)."""
PIPELINE = 2


class CreditWindow:
    """Bars sent and not answered (``outstanding``) against the store's ``credit``.

    ``take(wanted)`` waits for room and returns how many bars of ``wanted``
    may go now; ``give_back(n, credit)`` returns them when their answer (or
    failure) comes, with the credit it carried (None: not said).
    """

    def __init__(self) -> None:
        self.credit: int | None = None
        self.capacity: int | None = None  # the store's queue, as its answers say
        self.limited = True  # False once the store answered without a credit
        self.outstanding = 0
        self._answered = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def part(self, wanted: int) -> int:
        """How many of ``wanted`` bars one request should carry."""
        if not self.limited:
            return wanted
        credit = self.credit
        if credit is None:
            return min(wanted, INITIAL_PART)
        size = credit if credit < PIPELINE_FROM else max(MIN_PART, credit // PIPELINE)
        if self.capacity is not None:
            size = min(size, self.capacity // 2)
        size = max(1, size)
        if wanted <= size:
            return max(1, wanted)
        parts = -(-wanted // size)
        return -(-wanted // parts)

    def _room_for(self, n: int) -> bool:
        if not self.limited:
            return True
        if self.outstanding == 0:
            return True  # one request always goes, even one larger than the credit
        if not self._answered:
            return False  # the first request's answer says how much may follow
        assert self.credit is not None
        return self.outstanding + n <= self.credit

    async def take(self, wanted: int) -> int:
        """Wait for room; the bars (at most ``wanted``) now counted outstanding."""
        while True:
            n = self.part(wanted)
            if self._room_for(n):
                self.outstanding += n
                return n
            future = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future
            finally:
                if not future.done():
                    future.cancel()

    def give_back(self, n: int, credit: int | None, *, answered: bool = True) -> None:
        """``n`` bars are no longer out; ``credit`` as the answer said, if one came
        (``answered``; a failed request returns its bars and says nothing)."""
        self.outstanding = max(0, self.outstanding - n)
        if answered:
            self._answered = True
            if credit is not None:
                self.credit, self.limited = credit, True
            elif self.credit is None:
                self.limited = False  # a store that does not speak of credit
        self._wake()

    def _wake(self) -> None:
        """Every waiter looks again (a handful: one per sending task)."""
        waiters, self._waiters = self._waiters, deque()
        for future in waiters:
            if not future.done():
                future.set_result(None)
