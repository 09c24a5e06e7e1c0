"""Replaying the dead-letter queue through the coordinator.

Records are taken out of the file (``claim``), their items re-submitted, and
only those known to have landed - written, or dead-lettered afresh with their
new error - stay out; everything else goes back (``settle``), also when the
replay is refused, interrupted or slower than ``timeout``. A record may so be
replayed twice later (writes are idempotent); it is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from .completions import Ticket
from .dlq import DeadLetterQueue, DLQRecord
from .types import QueueClosedError, QueueFullError, T
from .write_coordinator import WriteCoordinator


@dataclass(frozen=True)
class ReplayResult:
    records: int  # claimed from the dead-letter queue
    items: int  # re-submitted through the coordinator
    written: int  # landed in the sink (removed from the dead-letter queue)
    dead_lettered_again: int  # rejected again: back in the queue with their new error
    requeued_records: int  # put back: not submitted (queue full, stopping) or not landed in time
    pending: bool  # some re-submitted items were still being written at the answer


async def replay_dead_letters(
    dlq: DeadLetterQueue[T], coordinator: WriteCoordinator[T], timeout: float
) -> ReplayResult:
    """Re-submit the claimed records; whatever is not known to have landed (not
    submitted, still being written at the deadline, or interrupted) goes back."""
    claim = await dlq.claim()
    submitted: list[tuple[DLQRecord[T], Ticket]] = []
    try:
        for record in claim.records:
            try:
                submitted.append((record, await coordinator.submit_all(record.items)))
            except (QueueFullError, QueueClosedError):
                break
        if submitted:  # commits land in order: the last one done means all are
            await coordinator.wait_finished(submitted[-1][1], timeout)
    finally:
        landed = {id(record) for record, ticket in submitted if ticket.finished}
        await dlq.settle(claim, [r for r in claim.records if id(r) not in landed])
    done = [ticket for _, ticket in submitted if ticket.finished]
    return ReplayResult(
        records=len(claim.records),
        items=sum(ticket.count for _, ticket in submitted),
        written=sum(ticket.written for ticket in done),
        dead_lettered_again=sum(ticket.lost for ticket in done),
        requeued_records=len(claim.records) - len(done),
        pending=len(done) < len(submitted),
    )
