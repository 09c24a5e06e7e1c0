"""POST /v1/bars (ingest) and GET /v1/bars (read)."""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, QueryParameter

from market_data_store.ingest import (
    PROVIDER_PATTERN,
    RESOLUTION_PATTERN,
    SYMBOL_PATTERN,
    BarDecoder,
    trim,
)
from market_data_store.service import Tenants
from market_data_store.storage import BarReader, BarRow, StoredBar

from ..openapi import IngestOperation
from ..problems import problem_responses
from ..reads import query_errors
from ..writes import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    UNAUTHORIZED,
    Ingest,
    IngestResult,
    ProducerHeader,
    tenant_of,
)


class BarsPage(msgspec.Struct):
    bars: list[StoredBar]
    count: int
    truncated: bool  # limit reached: more bars may follow the last ts


class BarsController(Controller):
    path = "/v1/bars"
    tags = ["bars"]
    security = [{"TenantToken": []}, {}]  # {}: a store without tenants needs no token

    @post(
        "/",
        summary="Ingest bars",
        description=(
            'Body (application/json or application/msgpack): {"provider": "...", "bars": '
            "[Core Bar, ...]}. All or nothing: 422 lists every bad field by bar index. "
            "202: queued in memory, not yet durable (a crash before the write loses "
            "them). With ?wait=commit: 201 once every bar is committed or dead-lettered "
            "(`dead_lettered_indices` names the bars the database refused, by index; "
            "every other bar is in the database); 202 with `pending: true` when that "
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
                s400="Unparseable body, or a bad or repeated query parameter",
                s401=UNAUTHORIZED,
                s413="More bars than `ingest.max_bars_per_request` (or, with tenants, "
                "than a tenant's share of the queue), or a body too large",
                s415="Another content type, or a content encoding",
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
        bar_decoder: NamedDependency[BarDecoder],
        wait: FromQuery[Literal["commit"] | None] = None,
        x_mds_producer: ProducerHeader = None,
    ) -> Response[Any]:
        async def decode(
            body: AsyncIterable[bytes], media_type: str, most: int, tenant: str
        ) -> list[BarRow]:
            return await bar_decoder.rows(body, media_type, most, tenant=tenant)

        return await ingest(request, decode, wait, x_mds_producer, "bars")

    @get(
        "/",
        summary="Read bars",
        description=(
            "One provider's bars of one symbol and resolution in [start, end), ordered by "
            "ts; prices as exact decimal strings. With tenants configured, the bearer "
            "token's tenant's bars only."
        ),
        responses={
            200: ResponseSpec(data_container=BarsPage, description="Bars, oldest first"),
            **problem_responses(
                s400="Bad, missing or repeated query parameters: each one listed",
                s401=UNAUTHORIZED,
                s503="The database cannot be used right now; retry after `Retry-After`",
            ),
        },
    )
    async def read(
        self,
        request: Request[Any, Any, Any],
        bar_reader: NamedDependency[BarReader],
        tenants: NamedDependency[Tenants],
        provider: Annotated[str, QueryParameter(schema_extra={"pattern": PROVIDER_PATTERN})],
        symbol: Annotated[str, QueryParameter(schema_extra={"pattern": SYMBOL_PATTERN})],
        resolution: Annotated[str, QueryParameter(schema_extra={"pattern": RESOLUTION_PATTERN})],
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> Response[Any]:
        tenant = tenant_of(request, tenants)
        errors = query_errors(provider, symbol, start, end, resolution=resolution)
        if errors:
            raise ValidationException("invalid query parameters", extra=errors)
        # the database unavailable (503) or refusing a value (400): raised, mapped in problems.py
        bars = await bar_reader.fetch(
            tenant=tenant,
            provider=trim(provider),
            symbol=trim(symbol).upper(),
            resolution=resolution,
            start=start,
            end=end,
            limit=limit,
        )
        return Response(BarsPage(bars, len(bars), len(bars) == limit))
