"""POST /v1/bars (ingest) and GET /v1/bars (read)."""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery
from litestar.response import Stream

from market_data_store.ingest import BAR_MEDIA_TYPES
from market_data_store.service import Tenants
from market_data_store.storage import BARS, BarRow, Reader, StoredBar

from ..openapi import IngestOperation, ReadOperation
from ..problems import problem_responses
from ..reads import (
    Cursor,
    Limit,
    OptionalSymbol,
    Provider,
    RequiredSymbols,
    ResampleFrom,
    Resolution,
    Symbols,
    answer_read,
    latest_rows,
)
from ..writes import (
    UNAUTHORIZED,
    Ingest,
    IngestResult,
    ProducerHeader,
    tenant_of,
)


class BarsPage(msgspec.Struct):
    bars: list[StoredBar]
    count: int
    truncated: bool  # more bars follow (read them from ``next``)
    next: str | None = None  # the cursor of the following page, when truncated


class LatestBars(msgspec.Struct):
    bars: list[StoredBar]
    count: int
    missing: list[str]  # the symbols asked for that have no bar


class BarsController(Controller):
    path = "/v1/bars"
    tags = ["bars"]
    security = [{"TenantToken": []}, {}]  # {}: a store without tenants needs no token

    @post(
        "/",
        summary="Ingest bars",
        description=(
            'Body (application/json or application/msgpack): {"provider": "...", "bars": '
            "[Core Bar, ...]}; or text/csv, a restore of what GET /v1/bars exports (a "
            "header row naming provider, symbol, resolution, ts, open, high, low, close, "
            "volume, optionally delayed and updated_at, in any order; a row's updated_at "
            "is the version it restores, never written over a later one). All or "
            "nothing: 422 lists every bad field by bar (CSV: data row) index. "
            "202: queued in memory, not yet durable (a crash before the write loses "
            "them). With ?wait=commit: 201 once every bar is committed or dead-lettered "
            "(`dead_lettered_indices` names the bars the database refused, by their "
            "index in the request: a key sent twice is one row, and its refusal names "
            "both bars; every other bar is in the database); 202 with `pending: true` when that "
            "outlived `ingest.commit_timeout`: nothing is promised, send the bars again "
            "(writes are idempotent). Every answer carries `credit`: how many bars this "
            "producer (`x-mds-producer`) may have sent and not yet had answered. 503 "
            "with Retry-After and the current FeedbackEvent when the queue has no room "
            "or the service is stopping, or when this tenant holds its share of the queue "
            "(`coordinator.tenant_share`, waited for as for a full queue; the other "
            "tenants go on). With tenants "
            "configured, the bearer token names the tenant whose bars these are."
        ),
        status_code=202,
        response_description="Queued (or, with ?wait=commit, still being written: `pending`)",
        operation_class=IngestOperation,
        responses={
            201: ResponseSpec(data_container=IngestResult, description="Committed"),
            **problem_responses(
                s400="Unparseable body (text/csv: not UTF-8), or a bad or repeated query parameter",
                s401=UNAUTHORIZED,
                s413="More bars than `ingest.max_bars_per_request` (or, with tenants, "
                "than a tenant's share of the queue), or a body too large",
                s415="Another content type, text/csv in a charset other than utf-8, or a "
                "content encoding",
                s422="Invalid bars or provider: every error, by bar index and field",
                s501="A transfer coding other than `chunked` (e.g. `gzip, chunked`)",
                s503="Back off: queue full, this tenant's share held, or stopping "
                "(`Retry-After`, `feedback`)",
            ),
        },
    )
    async def ingest(
        self,
        request: Request[Any, Any, Any],
        ingest: NamedDependency[Ingest],
        wait: FromQuery[Literal["commit"] | None] = None,
        x_mds_producer: ProducerHeader = None,
    ) -> Response[Any]:
        bar_decoder = ingest.bar_decoder  # one dependency: see ``Ingest``

        async def decode(
            body: AsyncIterable[bytes], media_type: str, most: int, tenant: str
        ) -> list[BarRow]:
            return await bar_decoder.rows(body, media_type, most, tenant=tenant)

        return await ingest(request, decode, wait, x_mds_producer, "bars", BAR_MEDIA_TYPES)

    @get(
        "/",
        summary="Read bars",
        description=(
            "One provider's bars of one resolution: of `symbol`, of a list (`symbols=A,B`) "
            "or of all its symbols, in [start, end), ordered by symbol (in the list's "
            "order) then ts; prices as exact decimal strings. A JSON page holds at most "
            "`limit` bars (default 1000, at most 10000); a full page carries `next`: pass "
            "it back as `cursor` for the following page (stable under concurrent "
            "writes). `Accept: text/csv` (a header row; instants RFC 3339 UTC; "
            "`updated_at` last, so `POST /v1/bars` restores it) or "
            "`application/x-ndjson` streams every matching bar (no cap unless `limit`), "
            "`Accept-Encoding: gzip` honoured; an interrupted export resumes with the "
            "`cursor` of the last bar received (docs/reads.md). `resample_from=1m` "
            "computes these `resolution` bars from the stored finer ones (first open, "
            "highest high, lowest low, last close, summed volume; UTC buckets from the "
            "epoch, ISO weeks from Monday, calendar months). With tenants configured, "
            "the bearer token's tenant's bars only."
        ),
        responses={
            200: ResponseSpec(
                data_container=BarsPage, description="Bars, by symbol then oldest first"
            ),
            **problem_responses(
                s400="Bad, missing or repeated query parameters: each one listed",
                s401=UNAUTHORIZED,
                s503="The database cannot be used right now, or every export slot is "
                "taken (`reads.max_exports`); retry after `Retry-After`",
            ),
        },
        operation_class=ReadOperation,
    )
    async def read(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        tenants: NamedDependency[Tenants],
        provider: Provider,
        resolution: Resolution,
        symbol: OptionalSymbol = None,
        symbols: Symbols = None,
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
        limit: Limit = None,
        cursor: Cursor = None,
        resample_from: ResampleFrom = None,
    ) -> Response[Any] | Stream:
        def page(rows: list[tuple[Any, ...]], following: str | None) -> BarsPage:
            bars = [StoredBar(*row) for row in rows]
            return BarsPage(bars, len(bars), following is not None, following)

        return await answer_read(
            request,
            reader,
            BARS,
            tenant=tenant_of(request, tenants),
            provider=provider,
            symbol=symbol,
            symbols=symbols,
            start=start,
            end=end,
            limit=limit,
            cursor=cursor,
            page=page,
            resolution=resolution,
            resample_from=resample_from,
        )

    @get(
        "/latest",
        summary="Latest bars",
        operation_id="V1BarsLatest",
        description=(
            "The newest bar of each listed symbol (`symbols=A,B,...`, at most 1000) of one "
            "provider and resolution, in the list's order; `missing` lists the symbols "
            "with none. With tenants configured, the bearer token's tenant's only."
        ),
        responses={
            200: ResponseSpec(data_container=LatestBars, description="The newest bars"),
            **problem_responses(
                s400="Bad, missing or repeated query parameters: each one listed",
                s401=UNAUTHORIZED,
                s503="The database cannot be used right now; retry after `Retry-After`",
            ),
        },
    )
    async def latest(
        self,
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        tenants: NamedDependency[Tenants],
        provider: Provider,
        symbols: RequiredSymbols,
        resolution: Resolution,
    ) -> LatestBars:
        tenant = tenant_of(request, tenants)
        rows, missing = await latest_rows(
            reader, BARS, tenant, provider, symbols, resolution=resolution
        )
        bars = [StoredBar(*row) for row in rows]
        return LatestBars(bars, len(bars), missing)
