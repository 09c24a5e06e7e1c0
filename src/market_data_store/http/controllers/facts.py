"""POST and GET /v1/<kind> for options, quotes, trades, fundamentals and news: one
router per kind, built from its description (``ingest.KINDS``).

(No ``from __future__ import annotations`` here: the handlers are made per kind, and
Litestar reads their annotations, which name the kind's own types, as objects.)"""

from collections.abc import AsyncIterable
from datetime import date, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, QueryParameter

from market_data_store.ingest import (
    KINDS,
    PROVIDER_PATTERN,
    SYMBOL_PATTERN,
    FactDecoder,
    FactKind,
    trim,
)
from market_data_store.service import Tenants
from market_data_store.storage import FactReader, FactRow

from ..openapi import fact_operation
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
            ("truncated", bool),  # limit reached: more may follow the last one's time
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
        fact_decoder: NamedDependency[FactDecoder],
        wait: FromQuery[Literal["commit"] | None] = None,
        x_mds_producer: ProducerHeader = None,
    ) -> Response[Any]:
        async def decode(
            body: AsyncIterable[bytes], media_type: str, most: int, tenant: str
        ) -> list[FactRow]:
            return await fact_decoder.rows(name, body, media_type, most, tenant=tenant)

        return await ingest(request, decode, wait, x_mds_producer, name)

    read_description = (
        f"One provider's {name} "
        + ("of one symbol " if by_symbol else "(naming `symbol`, when given) ")
        + f"with `{table.time}` in [start, end), ordered by it (then by key); decimals "
        "as exact strings. With tenants configured, the bearer token's tenant's only."
    )
    read_responses = {
        200: ResponseSpec(data_container=page, description=f"{name}, oldest first"),
        **problem_responses(
            s400="Bad, missing or repeated query parameters: each one listed",
            s401=UNAUTHORIZED,
            s503="The database cannot be used right now; retry after `Retry-After`",
        ),
    }

    async def read(
        request: Request[Any, Any, Any],
        fact_reader: FactReader,
        tenants: Tenants,
        provider: str,
        symbol: str | None,
        start: Any,
        end: Any,
        limit: int,
    ) -> Response[Any]:
        tenant = tenant_of(request, tenants)
        errors = query_errors(provider, symbol, start, end)
        if errors:
            raise ValidationException("invalid query parameters", extra=errors)
        rows = await fact_reader.fetch(
            name,
            tenant=tenant,
            provider=trim(provider),
            symbol=None if symbol is None else trim(symbol).upper(),
            start=start,
            end=end,
            limit=limit,
        )
        items = [stored(*row) for row in rows]
        return Response(page(items, len(items), len(items) == limit))

    Provider = Annotated[str, QueryParameter(schema_extra={"pattern": PROVIDER_PATTERN})]
    Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)]
    Symbol = Annotated[str, QueryParameter(schema_extra={"pattern": SYMBOL_PATTERN})]
    OptionalSymbol = Annotated[str | None, QueryParameter(schema_extra={"pattern": SYMBOL_PATTERN})]
    get_options: dict[str, Any] = {
        "summary": f"Read {name}",
        "description": read_description,
        "responses": read_responses,
        "operation_id": f"V1{name.capitalize()}Read",
    }

    if by_symbol:

        @get("/", **get_options)
        async def read_items(
            request: Request[Any, Any, Any],
            fact_reader: NamedDependency[FactReader],
            tenants: NamedDependency[Tenants],
            provider: Provider,
            symbol: Symbol,
            start: FromQuery[Time | None] = None,
            end: FromQuery[Time | None] = None,
            limit: Limit = DEFAULT_LIMIT,
        ) -> Response[Any]:
            return await read(request, fact_reader, tenants, provider, symbol, start, end, limit)

    else:

        @get("/", **get_options)
        async def read_items(
            request: Request[Any, Any, Any],
            fact_reader: NamedDependency[FactReader],
            tenants: NamedDependency[Tenants],
            provider: Provider,
            symbol: OptionalSymbol = None,
            start: FromQuery[Time | None] = None,
            end: FromQuery[Time | None] = None,
            limit: Limit = DEFAULT_LIMIT,
        ) -> Response[Any]:
            return await read(request, fact_reader, tenants, provider, symbol, start, end, limit)

    return Router(
        path=f"/v1/{name}",
        route_handlers=[ingest_items, read_items],
        tags=[name],
        security=[{"TenantToken": []}, {}],  # {}: a store without tenants needs no token
    )


def fact_routers() -> list[Router]:
    return [fact_router(kind) for kind in KINDS.values()]
