"""POST and GET /v1/<kind> for options, quotes, trades, fundamentals and news: one
router per kind, built from its description (``ingest.KINDS``).

(No ``from __future__ import annotations`` here: the handlers are made per kind, and
Litestar reads their annotations, which name the kind's own types, as objects.)"""

from collections.abc import AsyncIterable
from datetime import date, datetime
from typing import Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery
from litestar.response import Stream

from market_data_store.ingest import KINDS, FactKind
from market_data_store.service import Tenants
from market_data_store.storage import SHAPES, FactRow, Reader

from ..openapi import ReadOperation, fact_operation
from ..problems import problem_responses
from ..reads import (
    Cursor,
    Limit,
    OptionalSymbol,
    Provider,
    RequiredSymbols,
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


def _stored(kind: FactKind) -> type[msgspec.Struct]:
    """The struct a stored row is answered as: the provider and the item's fields,
    decimals as PostgreSQL's exact text (plain notation)."""
    fields: list[tuple[str, Any]] = [("provider", str)]
    sent = {f.name: f for f in msgspec.structs.fields(kind.item)}
    for name, sql in kind.table.columns:
        field = sent[name]
        if sql == "numeric":
            kind_of: Any = str if field.required else str | None
        elif sql == "text[]":
            kind_of = list[str]
        elif sql == "bigint":
            kind_of = int if field.required or field.default is not None else int | None
        elif sql == "timestamptz":
            kind_of = datetime
        elif sql == "date":
            kind_of = date
        elif sql == "boolean":
            kind_of = bool
        else:
            kind_of = str if field.required or field.default is not None else str | None
        fields.append((name, kind_of))
    name = kind.item.__name__.removesuffix("In")
    return msgspec.defstruct(f"Stored{name}", fields, frozen=True)


def _page(kind: FactKind, stored: type[msgspec.Struct]) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        f"{kind.kind.capitalize()}Page",
        [
            (kind.kind, list[stored]),  # type: ignore[valid-type]
            ("count", int),
            ("truncated", bool),  # more follow (read them from ``next``)
            ("next", str | None, None),  # the cursor of the following page, when truncated
        ],
    )


def fact_router(kind: FactKind) -> Router:
    """``/v1/<kind>``: ``POST`` (ingest, as bars are ingested) and ``GET`` (read)."""
    name = kind.kind
    table = kind.table
    stored = _stored(kind)
    page = _page(kind, stored)
    Time: Any = date if table.sql_type(table.time) == "date" else datetime
    by_symbol = table.symbol == "symbol"  # news: articles that name the symbol, if given

    @post(
        "/",
        summary=f"Ingest {name}",
        description=(
            f'Body (application/json or application/msgpack): {{"provider": "...", "{name}": '
            f"[...]}}. Exactly as `POST /v1/bars`: all or nothing (422 lists every bad "
            "field by index), an idempotent upsert on the natural key "
            f"({', '.join(table.key)}, with the tenant and the provider), 202 queued or "
            "with ?wait=commit 201 once committed or dead-lettered, `credit`, 503 with "
            "Retry-After and the feedback event. The rows share the bars' write queue and "
            "its feedback (`coordinator_id`)."
        ),
        status_code=202,
        response_description="Queued (or, with ?wait=commit, still being written: `pending`)",
        operation_class=fact_operation(kind),
        operation_id=f"V1{name.capitalize()}Ingest",
        responses={
            201: ResponseSpec(data_container=IngestResult, description="Committed"),
            **problem_responses(
                s400="Unparseable body, or a bad or repeated query parameter",
                s401=UNAUTHORIZED,
                s413=f"More {name} than `ingest.max_bars_per_request` (or, with tenants, "
                "than a tenant's share of the queue), or a body too large",
                s415="Another content type, or a content encoding",
                s422=f"Invalid {name} or provider: every error, by index and field",
                s501="A transfer coding other than `chunked` (e.g. `gzip, chunked`)",
                s503="Back off: queue full, this tenant's share held, or stopping "
                "(`Retry-After`, `feedback`)",
            ),
        },
    )
    async def ingest_items(
        request: Request[Any, Any, Any],
        ingest: NamedDependency[Ingest],
        wait: FromQuery[Literal["commit"] | None] = None,
        x_mds_producer: ProducerHeader = None,
    ) -> Response[Any]:
        fact_decoder = ingest.fact_decoder  # one dependency: see ``Ingest``

        async def decode(
            body: AsyncIterable[bytes], media_type: str, most: int, tenant: str
        ) -> list[FactRow]:
            return await fact_decoder.rows(name, body, media_type, most, tenant=tenant)

        return await ingest(request, decode, wait, x_mds_producer, name)

    read_description = (
        f"One provider's {name}: "
        + (
            "of `symbol`, of a list (`symbols=A,B`) or of all its symbols, ordered by "
            f"symbol (in the list's order), then by key ({', '.join(table.order[1:])})"
            if by_symbol
            else "naming `symbol` or any of `symbols` (all, when neither is given), "
            f"ordered by key ({', '.join(table.order)})"
        )
        + f", with `{table.time}` in [start, end); decimals as exact strings. A JSON page "
        "holds at most `limit` (default 1000, at most 10000); a full page carries `next` "
        "for `cursor`. `Accept: text/csv` or `application/x-ndjson` streams every match "
        "(as `GET /v1/bars`). With tenants configured, the bearer token's tenant's only."
    )
    read_responses = {
        200: ResponseSpec(data_container=page, description=f"{name}, in key order"),
        **problem_responses(
            s400="Bad, missing or repeated query parameters: each one listed",
            s401=UNAUTHORIZED,
            s503="The database cannot be used right now, or every export slot is taken "
            "(`reads.max_exports`); retry after `Retry-After`",
        ),
    }
    shape = SHAPES[name]

    @get(
        "/",
        summary=f"Read {name}",
        description=read_description,
        responses=read_responses,
        operation_id=f"V1{name.capitalize()}Read",
        operation_class=ReadOperation,
    )
    async def read_items(
        request: Request[Any, Any, Any],
        reader: NamedDependency[Reader],
        tenants: NamedDependency[Tenants],
        provider: Provider,
        symbol: OptionalSymbol = None,
        symbols: Symbols = None,
        start: FromQuery[Time | None] = None,
        end: FromQuery[Time | None] = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> Response[Any] | Stream:
        def answer(rows: list[tuple[Any, ...]], following: str | None) -> msgspec.Struct:
            items = [stored(*row) for row in rows]
            return page(items, len(items), following is not None, following)

        return await answer_read(
            request,
            reader,
            shape,
            tenant=tenant_of(request, tenants),
            provider=provider,
            symbol=symbol,
            symbols=symbols,
            start=start,
            end=end,
            limit=limit,
            cursor=cursor,
            page=answer,
        )

    handlers: list[Any] = [ingest_items, read_items]
    if name == "quotes":
        latest_page = msgspec.defstruct(
            "LatestQuotes",
            [("quotes", list[stored]), ("count", int), ("missing", list[str])],  # type: ignore[valid-type]
        )

        @get(
            "/latest",
            summary="Latest quotes",
            description=(
                "The newest quote of each listed symbol (`symbols=A,B,...`, at most 1000) of "
                "one provider, in the list's order; `missing` lists the symbols with none. "
                "With tenants configured, the bearer token's tenant's only."
            ),
            responses={
                200: ResponseSpec(data_container=latest_page, description="The newest quotes"),
                **problem_responses(
                    s400="Bad, missing or repeated query parameters: each one listed",
                    s401=UNAUTHORIZED,
                    s503="The database cannot be used right now; retry after `Retry-After`",
                ),
            },
            operation_id="V1QuotesLatest",
        )
        async def latest_items(
            request: Request[Any, Any, Any],
            reader: NamedDependency[Reader],
            tenants: NamedDependency[Tenants],
            provider: Provider,
            symbols: RequiredSymbols,
        ) -> Response[Any]:
            tenant = tenant_of(request, tenants)
            rows, missing = await latest_rows(reader, shape, tenant, provider, symbols)
            items = [stored(*row) for row in rows]
            return Response(latest_page(items, len(items), missing))

        handlers.append(latest_items)

    return Router(
        path=f"/v1/{name}",
        route_handlers=handlers,
        tags=[name],
        security=[{"TenantToken": []}, {}],  # {}: a store without tenants needs no token
    )


def fact_routers() -> list[Router]:
    return [fact_router(kind) for kind in KINDS.values()]
