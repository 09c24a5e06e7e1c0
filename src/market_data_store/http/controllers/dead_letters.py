"""Operator routes for the dead-letter queue: look at it, replay it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from market_data_store.config import Settings
from market_data_store.coordinator import (
    ClaimInProgress,
    DeadLetterQueue,
    DLQRecord,
    QueueClosedError,
    QueueFullError,
    Ticket,
    WriteCoordinator,
)
from market_data_store.storage import BarRow

from ..guards import admin_token_guard
from ..problems import problem


class DeadLetterRecordBody(msgspec.Struct):
    ts: datetime
    error: str
    metadata: dict[str, Any]
    items: list[BarRow]


class DeadLetterSummary(msgspec.Struct):
    records: int
    items: int
    recent: list[DeadLetterRecordBody]  # newest last


class ReplayResult(msgspec.Struct):
    records: int  # claimed from the dead-letter queue
    items: int  # re-submitted through the coordinator
    written: int  # landed in the database (removed from the dead-letter queue)
    dead_lettered_again: int  # rejected again: back in the queue with their new error
    requeued_records: int  # not re-submitted (queue full / stopping): left in the queue
    pending: bool  # some re-submitted items were still being written at the answer


def _body(record: DLQRecord[BarRow]) -> DeadLetterRecordBody:
    ts = datetime.fromtimestamp(record.ts, UTC)
    return DeadLetterRecordBody(ts, record.error, record.metadata, list(record.items))


class DeadLetterController(Controller):
    path = "/admin/dlq"
    guards = [admin_token_guard]
    tags = ["admin"]
    security = [{"BearerToken": []}]

    @get("/", summary="Dead-letter queue size and its most recent records")
    async def summary(
        self,
        coordinator: NamedDependency[WriteCoordinator[BarRow]],
        recent: Annotated[int, QueryParameter(ge=0, le=1000)] = 20,
    ) -> Response[Any]:
        dlq = coordinator.dead_letter_queue
        if dlq is None:
            return problem(404, "no dead-letter queue is configured")
        records = await dlq.records()
        shown = records[-recent:] if recent else []
        summary = DeadLetterSummary(
            len(records), sum(len(r.items) for r in records), [_body(r) for r in shown]
        )
        return Response(summary)

    @post("/replay", summary="Re-submit dead-lettered bars; those that land are removed")
    async def replay(
        self,
        coordinator: NamedDependency[WriteCoordinator[BarRow]],
        settings: NamedDependency[Settings],
    ) -> Response[Any]:
        dlq = coordinator.dead_letter_queue
        if dlq is None:
            return problem(404, "no dead-letter queue is configured")
        try:
            result = await _replay(dlq, coordinator, settings.ingest.commit_timeout)
        except ClaimInProgress:
            return problem(409, "a replay is already running")
        return Response(result, status_code=200)


async def _replay(
    dlq: DeadLetterQueue[BarRow], coordinator: WriteCoordinator[BarRow], timeout: float
) -> ReplayResult:
    claim = await dlq.claim()
    tickets: list[Ticket] = []
    unreplayed: list[DLQRecord[BarRow]] = []
    try:
        for index, record in enumerate(claim.records):
            try:
                tickets.append(await coordinator.submit_all(record.items))
            except (QueueFullError, QueueClosedError):
                unreplayed = claim.records[index:]
                break
    finally:
        # Submitted items now belong to the coordinator (written, or dead-lettered
        # afresh); only what was not submitted goes back.
        await dlq.settle(claim, unreplayed)
    finished = [await coordinator.wait_finished(t, timeout) for t in tickets]
    return ReplayResult(
        records=len(claim.records),
        items=sum(t.count for t in tickets),
        written=sum(t.written for t, done in zip(tickets, finished, strict=True) if done),
        dead_lettered_again=sum(t.lost for t in tickets),
        requeued_records=len(unreplayed),
        pending=not all(finished),
    )
