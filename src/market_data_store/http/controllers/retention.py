"""Operator route for retention: delete what ``[retention]`` no longer keeps."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException

from market_data_store.storage import Retention, RetentionBusyError

from ..guards import admin_token_guard
from ..problems import problem_responses


class RetentionTableBody(msgspec.Struct):
    table: str
    keep: str  # as configured, e.g. "365d"
    cutoff: datetime  # rows before it were deleted (a date column: from this midnight UTC)
    deleted: int  # rows deleted by this apply (dropped chunks' rows included)
    complete: bool  # no row before the cutoff is left (but rows a writer held)


class RetentionBody(msgspec.Struct):
    tables: list[RetentionTableBody]  # the kinds with a retention set, in config order
    complete: bool  # every table's; false: apply again for the rest


class RetentionController(Controller):
    path = "/admin/retention"
    guards = [admin_token_guard]
    tags = ["admin"]
    security = [{"BearerToken": []}]

    @post(
        "/apply",
        summary="Delete the rows older than each kind's retention (`[retention]`)",
        description=(
            "Every tenant's rows whose time is before now minus the kind's retention. "
            "TimescaleDB hypertables drop whole chunks first; the rest goes in batches "
            "of `retention.batch_rows`, each its own transaction, passing over rows a "
            "writer holds. After `retention.max_seconds` no batch starts: the answer "
            "says `complete: false`, and the next apply goes on. Kinds without a "
            "retention are not touched (none set: an empty list). One apply at a time "
            "per database: another one running is a 409."
        ),
        status_code=200,
        responses=problem_responses(
            s401="No valid admin bearer token (`WWW-Authenticate: Bearer`)",
            s409="Another apply is running (in this replica or another); nothing was deleted",
            s503="The database cannot be used right now; retry after `Retry-After`",
        ),
    )
    async def apply(self, retention: NamedDependency[Retention]) -> RetentionBody:
        try:
            result = await retention.apply()
        except RetentionBusyError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        tables = [
            RetentionTableBody(t.table, t.keep, t.cutoff, t.deleted, t.complete)
            for t in result.tables
        ]
        return RetentionBody(tables, result.complete)
