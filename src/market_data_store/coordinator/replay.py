"""Replaying the dead-letter queue through the coordinator.

Records are taken out of the file (``claim``) and their items re-submitted.
A record whose items the coordinator accepted is out of the file for good: the
coordinator writes them or dead-letters them afresh, once, with their new error
(until then they are kept aside on disk, for a crash only). Records not
submitted - the queue was full, the coordinator stopping, the replay interrupted
or out of time - go back (``settle``). So replays can be repeated and can run
concurrently, also while earlier ones are still being written: each item is in
the file at most once, and not at all once it landed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .completions import Ticket
from .dlq import DeadLetterQueue, DLQRecord
from .types import QueueClosedError, QueueFullError, T
from .write_coordinator import WriteCoordinator


@dataclass(frozen=True)
class ReplayResult:
    records: int  # claimed from the dead-letter queue
    items: int  # re-submitted through the coordinator
    written: int  # landed in the sink by the answer
    dead_lettered_again: int  # rejected again by the answer: back in the queue, new error
    requeued_records: int  # put back untouched: not submitted (queue full, stopping, time out)
    pending: bool  # some re-submitted items were still being written at the answer


async def replay_dead_letters(
    dlq: DeadLetterQueue[T], coordinator: WriteCoordinator[T], timeout: float
) -> ReplayResult:
    """Re-submit the claimed records for up to ``timeout`` seconds and wait, within
    the same time, for them to be written; what was not submitted goes back."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    claim = await dlq.claim()
    submitted: list[tuple[DLQRecord[T], Ticket]] = []
    try:
        for record in claim.records:
            if loop.time() >= deadline:
                break
            try:
                submitted.append((record, await coordinator.submit_all(record.items)))
            except (QueueFullError, QueueClosedError):
                break
        if submitted:  # commits land in order: the last one done means all are
            await coordinator.wait_finished(submitted[-1][1], max(0.0, deadline - loop.time()))
    finally:
        handed = {id(record) for record, _ in submitted}
        unfinished = [(record, ticket) for record, ticket in submitted if not ticket.finished]
        tickets = [ticket for _, ticket in unfinished]
        await dlq.settle(
            claim,
            [r for r in claim.records if id(r) not in handed],
            in_flight=[record for record, _ in unfinished],
            finished=lambda: all(ticket.finished for ticket in tickets),
        )
    done = [ticket for _, ticket in submitted if ticket.finished]
    return ReplayResult(
        records=len(claim.records),
        items=sum(ticket.count for _, ticket in submitted),
        written=sum(ticket.written for ticket in done),
        dead_lettered_again=sum(ticket.lost for ticket in done),
        requeued_records=len(claim.records) - len(submitted),
        pending=len(done) < len(submitted),
    )
