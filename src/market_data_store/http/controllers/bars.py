"""POST /v1/bars (ingest) and GET /v1/bars (read)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, HeaderParameter, QueryParameter

from market_data_store.config import Settings
from market_data_store.coordinator import (
    QueueClosedError,
    QueueFullError,
    Shares,
    WriteCoordinator,
)
from market_data_store.ingest import (
    EARLIEST,
    LATEST,
    MEDIA_TYPES,
    PROVIDER_PATTERN,
    PROVIDER_RULE,
    RESOLUTION,
    RESOLUTION_PATTERN,
    SYMBOL_PATTERN,
    SYMBOL_RULE,
    TS_RANGE_RULE,
    BarDecoder,
    InvalidBodyError,
    MalformedBodyError,
    TooManyBarsError,
    provider_ok,
    symbol_ok,
    trim,
)
from market_data_store.service import Lifecycle, Tenants
from market_data_store.storage import BarReader, BarRow, StoredBar

from ..openapi import IngestOperation
from ..problems import problem, problem_responses

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
SHUTDOWN_RETRY_AFTER = 5


PRODUCER_HEADER = "x-mds-producer"
PRODUCER_ID = re.compile(r"^[!-~]{1,64}$")
ANONYMOUS = ""
"""Producers that do not name themselves share one credit."""
ProducerHeader = Annotated[
    str | None,
    HeaderParameter(
        name=PRODUCER_HEADER,
        pattern=PRODUCER_ID.pattern,
        required=False,
        description=(
            "Who sends (1-64 printable ASCII characters, no space; e.g. a UUID per "
            "client): the store shares its credit evenly among the producers it has "
            "seen lately. Without it, requests share one credit."
        ),
    ),
]


class IngestResult(msgspec.Struct, omit_defaults=True):
    accepted: int
    level: str
    queue_size: int
    capacity: int
    coordinator_id: str  # whose feedback (GET /v1/feedback/stream) a producer follows
    credit: int  # bars this producer may have sent and not yet had answered
    committed: int | None = None  # ?wait=commit: rows written
    dead_lettered: int | None = None  # ?wait=commit: rows rejected by the database
    dead_lettered_indices: list[int] | None = None  # ?wait=commit: which bars, by index
    pending: bool = False  # ?wait=commit timed out: accepted, not yet all written


class BarsPage(msgspec.Struct):
    bars: list[StoredBar]
    count: int
    truncated: bool  # limit reached: more bars may follow the last ts


UNAUTHORIZED = "No or unknown bearer token, tenants being configured (`WWW-Authenticate: Bearer`)"


def tenant_of(request: Request[Any, Any, Any], tenants: Tenants) -> str:
    """The request's tenant (``default`` without tenants configured); 401 otherwise."""
    given = request.headers.getall("authorization", [])
    # two headers: which one would it be? neither
    tenant = None if len(given) > 1 else tenants.tenant(given[0] if given else None)
    if tenant is None:
        raise NotAuthorizedException("a bearer token naming a tenant is required")
    return tenant


def _unavailable(coordinator: WriteCoordinator[BarRow], detail: str, reason: str) -> Response[Any]:
    retry_after = SHUTDOWN_RETRY_AFTER if reason == "shutting_down" else coordinator.retry_after()
    return problem(
        503,
        detail,
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
        feedback=coordinator.feedback_event(reason).model_dump(mode="json"),
    )


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
        coordinator: NamedDependency[WriteCoordinator[BarRow]],
        bar_decoder: NamedDependency[BarDecoder],
        lifecycle: NamedDependency[Lifecycle],
        settings: NamedDependency[Settings],
        tenants: NamedDependency[Tenants],
        tenant_shares: NamedDependency[Shares],
        wait: FromQuery[Literal["commit"] | None] = None,
        x_mds_producer: ProducerHeader = None,
    ) -> Response[Any]:
        tenant = tenant_of(request, tenants)
        credits = coordinator.credits
        # producers of two tenants never share a name (nor the anonymous credit)
        name = (
            f"{tenant}/{x_mds_producer or ANONYMOUS}"
            if tenants.enabled
            else (x_mds_producer or ANONYMOUS)
        )
        credits.enter(name)
        try:
            return await self._ingest(
                request, coordinator, bar_decoder, lifecycle, settings, wait, tenant, tenant_shares
            )
        finally:
            credits.leave(name)

    async def _ingest(
        self,
        request: Request[Any, Any, Any],
        coordinator: WriteCoordinator[BarRow],
        bar_decoder: BarDecoder,
        lifecycle: Lifecycle,
        settings: Settings,
        wait: str | None,
        tenant: str,
        shares: Shares,
    ) -> Response[Any]:
        if lifecycle.shutting_down:
            return _unavailable(coordinator, "the service is shutting down", "shutting_down")
        limits = settings.ingest
        raw_type = request.headers.get("content-type", "")
        media_type = MEDIA_TYPES.get(raw_type.split(";", 1)[0].strip().lower())
        if media_type is None:
            supported = ", ".join(sorted(MEDIA_TYPES))
            return problem(415, f"content type {raw_type!r} is not accepted; use {supported}")
        codings = [
            coding.strip().lower()
            for value in request.headers.getall("transfer-encoding", [])
            for coding in value.split(",")
        ]
        if codings and codings != ["chunked"]:  # RFC 9112 6.1: a coding not understood
            shown = ", ".join(codings)
            return problem(501, f"transfer coding {shown!r} is not supported; only chunked")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            return problem(415, f"content encoding {encoding!r} is not accepted; send it plain")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            return problem(413, f"body larger than {limits.max_body_bytes} bytes")
        try:
            rows = await bar_decoder.rows(
                request.stream(), media_type, limits.max_bars_per_request, tenant=tenant
            )
        except MalformedBodyError as exc:
            return problem(400, str(exc))
        except TooManyBarsError as exc:
            return problem(413, str(exc))
        except InvalidBodyError as exc:
            return _invalid(exc)
        if shares.cap is not None and len(rows) > shares.cap:
            return problem(
                413,
                f"{len(rows)} bars are more than a tenant's share of the write queue "
                f"({shares.cap}); send at most {shares.cap} per request",
            )
        if not await shares.acquire(tenant, len(rows)):
            return _unavailable(
                coordinator,
                f"tenant {tenant} holds its share of the write queue; retry later",
                "tenant_share",
            )
        try:
            ticket = await coordinator.submit_all(rows)
        except QueueFullError:
            return _unavailable(coordinator, "the write queue is full; retry later", "queue_full")
        except QueueClosedError:
            return _unavailable(coordinator, "the service is shutting down", "shutting_down")
        finally:
            shares.release(tenant, len(rows))
        shares.track(tenant, ticket)
        queue = coordinator.queue
        committing = wait == "commit"
        finished = committing and await coordinator.wait_finished(ticket, limits.commit_timeout)
        # the queue as it is when answered: what the producer acts on
        result = IngestResult(
            len(rows),
            queue.level.value,
            queue.size,
            queue.capacity,
            coordinator.coord_id,
            coordinator.credits.per_producer(),
        )
        if not committing:
            return Response(result, status_code=202)
        if not finished:
            result.pending = True
            return Response(result, status_code=202)
        result.committed, result.dead_lettered = ticket.written, ticket.lost
        if ticket.lost:
            result.dead_lettered_indices = ticket.lost_offsets()
        return Response(result, status_code=201)

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
        errors = _query_errors(provider, symbol, resolution, start, end)
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


def _invalid(exc: InvalidBodyError) -> Response[Any]:
    shown = [msgspec.to_builtins(e) for e in exc.errors]
    extra: dict[str, Any] = {"errors": shown}
    if exc.total > len(shown):
        extra["more_errors"] = exc.total - len(shown)
    return problem(422, f"{exc.total} invalid field(s); nothing was stored", **extra)


# a query bound may be LATEST itself: ``end`` is exclusive
QUERY_TS_RULE = "must be from 1800-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
assert TS_RANGE_RULE.startswith(QUERY_TS_RULE.replace(" to ", " to before "))


def _query_errors(
    provider: str, symbol: str, resolution: str, start: datetime | None, end: datetime | None
) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    if not provider_ok(provider):
        errors.append({"key": "provider", "message": PROVIDER_RULE})
    if not symbol_ok(symbol, trim(symbol).upper()):
        errors.append({"key": "symbol", "message": SYMBOL_RULE})
    if not RESOLUTION.fullmatch(resolution):
        errors.append({"key": "resolution", "message": "must be <n><s|m|h|d|w|mo>, e.g. 1m"})
    for key, moment in (("start", start), ("end", end)):
        if moment is not None and moment.utcoffset() is None:
            errors.append({"key": key, "message": "must include a timezone"})
        elif moment is not None and not EARLIEST <= moment <= LATEST:
            errors.append({"key": key, "message": QUERY_TS_RULE})
    if not errors and start is not None and end is not None and start >= end:
        errors.append({"key": "end", "message": "must be after start"})
    return errors
