"""Operator routes for the dead-letter queue: look at it, replay it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import QueryParameter

from market_data_store.config import Settings
from market_data_store.coordinator import DLQRecord, WriteCoordinator
from market_data_store.coordinator.replay import replay_dead_letters
from market_data_store.storage import BarRow, FactRow, Row

from ..guards import admin_token_guard
from ..problems import problem_responses


class DeadLetterFactBody(msgspec.Struct):
    """A dead-lettered row of another kind than bars: its columns by name, as text."""

    kind: str  # options, quotes, trades, fundamentals or news
    tenant: str
    provider: str
    columns: dict[str, str | None]
    received_at: datetime


class DeadLetterRecordBody(msgspec.Struct):
    ts: datetime
    error: str
    metadata: dict[str, Any]
    items: list[BarRow | DeadLetterFactBody]


def _item(row: Row) -> BarRow | DeadLetterFactBody:
    if isinstance(row, FactRow):
        return DeadLetterFactBody(
            row.kind, row.tenant, row.provider, row.columns(), row.received_at
        )
    return row


class DeadLetterSummary(msgspec.Struct):
    records: int
    items: int
    unreadable_lines: int  # kept in the file as they are, for an operator to look at
    recent: list[DeadLetterRecordBody]  # newest last
    # held by a replay: being re-submitted, or re-submitted and not written yet (those
    # rejected again come back into ``records`` with their new error)
    in_flight_records: int = 0
    in_flight_items: int = 0


def _body(record: DLQRecord[Row]) -> DeadLetterRecordBody:
    ts = datetime.fromtimestamp(record.ts, UTC)
    items = [_item(row) for row in record.items]
    return DeadLetterRecordBody(ts, record.error, record.metadata, items)


class DeadLetterController(Controller):
    path = "/admin/dlq"
    guards = [admin_token_guard]
    tags = ["admin"]
    security = [{"BearerToken": []}]

    @get(
        "/",
        summary="Dead-letter queue size and its most recent records",
        responses=problem_responses(
            s400="Bad or repeated `recent`",
            s401="No valid admin bearer token (`WWW-Authenticate: Bearer`)",
            s404="No dead-letter queue is configured",
        ),
    )
    async def summary(
        self,
        coordinator: NamedDependency[WriteCoordinator[Row]],
        recent: Annotated[int, QueryParameter(ge=0, le=1000)] = 20,
    ) -> Response[Any]:
        dlq = coordinator.dead_letter_queue
        if dlq is None:
            raise NotFoundException("no dead-letter queue is configured")
        scan = await dlq.scan()
        records = scan.records
        shown = records[-recent:] if recent else []
        summary = DeadLetterSummary(
            len(records),
            sum(len(r.items) for r in records),
            len(scan.unreadable),
            [_body(r) for r in shown],
            len(scan.in_flight),
            sum(len(r.items) for r in scan.in_flight),
        )
        return Response(summary)

    @post(
        "/replay",
        summary="Re-submit dead-lettered rows; those that land are removed (idempotent)",
        description=(
            "Rows (bars and the other kinds) rejected again come back into the file once, "
            "with their new error; records not submitted go back untouched. Safe to "
            "repeat and to run concurrently."
        ),
        status_code=200,
        responses=problem_responses(
            s401="No valid admin bearer token (`WWW-Authenticate: Bearer`)",
            s404="No dead-letter queue is configured",
        ),
    )
    async def replay(
        self,
        coordinator: NamedDependency[WriteCoordinator[Row]],
        settings: NamedDependency[Settings],
    ) -> Response[Any]:
        dlq = coordinator.dead_letter_queue
        if dlq is None:
            raise NotFoundException("no dead-letter queue is configured")
        result = await replay_dead_letters(dlq, coordinator, settings.ingest.commit_timeout)
        return Response(result, status_code=200)
