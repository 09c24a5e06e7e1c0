"""Each tenant's part of a coordinator: reserved, then held until its items finish."""

from __future__ import annotations

import asyncio

from market_data_store.coordinator import Shares, Ticket
from market_data_store.coordinator.completions import Completions


def submitted(completions: Completions, start: int, end: int) -> Ticket:
    ticket = Ticket()
    completions.track(ticket, start, end)
    return ticket


async def test_an_owner_is_held_to_its_cap_until_its_items_finish() -> None:
    completions = Completions()
    shares = Shares(completions, cap=30)
    assert shares.reserve("a", 20)
    assert not shares.reserve("a", 11)  # 20 reserved: 31 > 30
    assert shares.reserve("b", 30)  # another owner: its own cap
    shares.release("a", 20)
    shares.track("a", submitted(completions, 0, 20))
    assert shares.held("a") == 20
    assert not shares.reserve("a", 11)
    assert shares.reserve("a", 10)
    shares.release("a", 10)
    shares.track("a", submitted(completions, 20, 30))
    assert shares.held("a") == 30
    completions.finish(0, 20)
    assert shares.held("a") == 10
    completions.finish(20, 30)
    assert shares.held("a") == 0
    assert shares.reserve("a", 30)


async def test_a_request_larger_than_the_cap_never_fits() -> None:
    shares = Shares(Completions(), cap=10)
    assert not shares.reserve("a", 11)
    assert shares.held("a") == 0
    assert shares.reserve("a", 10)
    shares.release("a", 10)
    assert shares.held("a") == 0


async def test_no_cap_counts_nothing() -> None:
    completions = Completions()
    shares = Shares(completions, cap=None)
    for _ in range(3):
        assert shares.reserve("a", 10**6)
    shares.track("a", submitted(completions, 0, 10))
    assert shares.held("a") == 0


async def test_a_ticket_finished_before_it_is_tracked_holds_nothing() -> None:
    completions = Completions()
    shares = Shares(completions, cap=10)
    ticket = submitted(completions, 0, 5)
    completions.finish(0, 5)
    shares.track("a", ticket)
    assert shares.held("a") == 0


async def test_acquire_waits_for_the_owners_items_to_finish_then_gives_up() -> None:
    completions = Completions()
    impatient = Shares(completions, cap=10)  # overflow_strategy "error"
    shares = Shares(completions, cap=10, patience=0.2)  # "block"
    ticket = submitted(completions, 0, 10)
    for each in (impatient, shares):
        assert await each.acquire("a", 10)
        each.release("a", 10)
        each.track("a", ticket)
    assert not await impatient.acquire("a", 5)  # no patience: at once
    assert not await shares.acquire("a", 11)  # never fits
    waiting = asyncio.create_task(shares.acquire("a", 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    completions.finish(0, 4)  # 6 still held: 6 + 5 > 10, it waits on
    await asyncio.sleep(0.01)
    assert not waiting.done()
    completions.finish(4, 10)
    assert await waiting
    assert shares.held("a") == 5
    assert not await shares.acquire("a", 6)  # its patience ends the wait
    assert shares.held("a") == 5
    assert completions._advance == []  # the waiter that gave up is not kept
