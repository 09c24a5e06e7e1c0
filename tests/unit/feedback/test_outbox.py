"""The outbox: never blocks the caller, bounded, every event accounted for at stop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from market_data_store.feedback import Outbox


class Endpoint:
    """Delivers (True) unless told to hang; records what it got."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, item: int) -> bool:
        await self.open.wait()
        self.got.append(item)
        return True


async def test_delivers_in_order_and_counts() -> None:
    endpoint = Endpoint()
    outbox = Outbox[int]("t", 10, endpoint)
    outbox.start()
    for i in range(5):
        outbox.put_nowait(i)
    await outbox.stop(timeout=1)
    assert endpoint.got == [0, 1, 2, 3, 4]
    assert outbox.stats.sent == 5


async def test_full_buffer_drops_the_oldest_and_stop_accounts_for_everything() -> None:
    endpoint = Endpoint()
    endpoint.open.clear()  # hangs
    outbox = Outbox[int]("t", 3, endpoint)
    outbox.start()
    outbox.put_nowait(0)
    await asyncio.sleep(0)  # 0 is in flight now
    for i in range(1, 7):
        outbox.put_nowait(i)
    assert outbox.size == 3
    assert outbox.stats.discarded == 3  # 1, 2, 3 gave way to 4, 5, 6
    await outbox.stop(timeout=0.05)
    s = outbox.stats
    assert (s.sent, s.failed, s.discarded) == (0, 0, 7)  # in flight + buffered at stop
    outbox.put_nowait(7)  # after stop: counted, not kept
    assert s.discarded == 8
    assert outbox.size == 0


async def test_failures_are_counted_and_the_drain_goes_on() -> None:
    async def flaky(item: int) -> bool:
        if item == 1:
            raise RuntimeError("boom")
        return item != 2

    outbox = Outbox[int]("t", 10, flaky)
    outbox.start()
    for i in range(4):
        outbox.put_nowait(i)
    await outbox.stop(timeout=1)
    assert (outbox.stats.sent, outbox.stats.failed) == (2, 2)


async def test_a_cancelled_stop_still_cancels_the_drain() -> None:
    endpoint = Endpoint()
    endpoint.open.clear()
    outbox = Outbox[int]("t", 3, endpoint)
    outbox.start()
    outbox.put_nowait(1)
    await asyncio.sleep(0)
    (drain,) = [t for t in asyncio.all_tasks() if t.get_name() == "outbox-t"]
    stopping = asyncio.create_task(outbox.stop(timeout=30))
    await asyncio.sleep(0.01)
    stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopping
    assert drain.cancelled()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Outbox[int]("t", 0, Endpoint())
