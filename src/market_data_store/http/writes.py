"""What every ingest route shares (``POST /v1/bars`` and ``POST /v1/<kind>``): the
tenant a request's token names, the producer's credit, the body's framing checks, the
tenant's share, the submit to the one write coordinator and the answer."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import NotAuthorizedException
from litestar.params import HeaderParameter

from market_data_store.config import Settings
from market_data_store.coordinator import (
    QueueClosedError,
    QueueFullError,
    Shares,
    WriteCoordinator,
)
from market_data_store.ingest import (
    CSV,
    MEDIA_TYPES,
    BarDecoder,
    FactDecoder,
    InvalidBodyError,
    MalformedBodyError,
    TooManyBarsError,
    item_indices,
)
from market_data_store.service import Lifecycle, Tenants
from market_data_store.storage import Row

from .problems import problem

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
    credit: int  # rows (bars or items) this producer may have sent and not yet had answered
    committed: int | None = None  # ?wait=commit: rows written
    dead_lettered: int | None = None  # ?wait=commit: rows rejected by the database
    # ?wait=commit: the request's items the refused rows stand for (a key sent twice: both)
    dead_lettered_indices: list[int] | None = None
    pending: bool = False  # ?wait=commit timed out: accepted, not yet all written


UNAUTHORIZED = "No or unknown bearer token, tenants being configured (`WWW-Authenticate: Bearer`)"


def tenant_of(request: Request[Any, Any, Any], tenants: Tenants) -> str:
    """The request's tenant (``default`` without tenants configured); 401 otherwise."""
    given = request.headers.getall("authorization", [])
    # two headers: which one would it be? neither
    tenant = None if len(given) > 1 else tenants.tenant(given[0] if given else None)
    if tenant is None:
        raise NotAuthorizedException("a bearer token naming a tenant is required")
    return tenant


def unavailable(coordinator: WriteCoordinator[Row], detail: str, reason: str) -> Response[Any]:
    retry_after = SHUTDOWN_RETRY_AFTER if reason == "shutting_down" else coordinator.retry_after()
    return problem(
        503,
        detail,
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
        feedback=coordinator.feedback_event(reason).model_dump(mode="json"),
    )


def invalid(exc: InvalidBodyError) -> Response[Any]:
    shown = [msgspec.to_builtins(e) for e in exc.errors]
    extra: dict[str, Any] = {"errors": shown}
    if exc.total > len(shown):
        extra["more_errors"] = exc.total - len(shown)
    return problem(422, f"{exc.total} invalid field(s); nothing was stored", **extra)


def _charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a content type (lower case, unquoted), if any."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


Decode = Callable[[AsyncIterable[bytes], str, int, str], Awaitable[Sequence[Row]]]
"""(body pieces, media type, most rows, tenant) -> the rows, or an ``IngestError``."""


class Ingest:
    """One ingest request from its decoded rows to its answer.

    It carries the decoders too, so that an ingest route has this one dependency:
    Litestar resolves two or more dependencies of a handler in an anyio task group
    (a task each): a fifth of a small request's CPU in the service (0.27 -> 0.21 ms)."""

    def __init__(
        self,
        coordinator: WriteCoordinator[Row],
        lifecycle: Lifecycle,
        settings: Settings,
        tenants: Tenants,
        shares: Shares,
        bar_decoder: BarDecoder,
        fact_decoder: FactDecoder,
    ) -> None:
        self.coordinator = coordinator
        self.lifecycle = lifecycle
        self.settings = settings
        self.tenants = tenants
        self.shares = shares
        self.bar_decoder = bar_decoder
        self.fact_decoder = fact_decoder

    async def __call__(
        self,
        request: Request[Any, Any, Any],
        decode: Decode,
        wait: str | None,
        producer: str | None,
        what: str,
        media_types: Mapping[str, str] = MEDIA_TYPES,
    ) -> Response[Any]:
        """Answer ``request`` (``what``: the rows' name in messages, e.g. ``bars``;
        ``media_types``: the content types the route takes, each to what ``decode``
        is told)."""
        tenant = tenant_of(request, self.tenants)
        credits = self.coordinator.credits
        # producers of two tenants never share a name (nor the anonymous credit)
        name = (
            f"{tenant}/{producer or ANONYMOUS}" if self.tenants.enabled else (producer or ANONYMOUS)
        )
        credits.enter(name)
        try:
            return await self._ingest(request, decode, wait, tenant, what, media_types)
        finally:
            credits.leave(name)

    async def _ingest(
        self,
        request: Request[Any, Any, Any],
        decode: Decode,
        wait: str | None,
        tenant: str,
        what: str,
        media_types: Mapping[str, str],
    ) -> Response[Any]:
        coordinator, shares = self.coordinator, self.shares
        if self.lifecycle.shutting_down:
            return unavailable(coordinator, "the service is shutting down", "shutting_down")
        limits = self.settings.ingest
        raw_type = request.headers.get("content-type", "")
        media_type = media_types.get(raw_type.split(";", 1)[0].strip().lower())
        if media_type is None:
            supported = ", ".join(sorted(media_types))
            return problem(415, f"content type {raw_type!r} is not accepted; use {supported}")
        charset = _charset(raw_type)
        if media_type == CSV and charset not in (None, "utf-8", "utf8", "us-ascii"):
            return problem(415, f"charset {charset!r} is not accepted for {CSV}; send utf-8")
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
            rows = await decode(request.stream(), media_type, limits.max_bars_per_request, tenant)
        except MalformedBodyError as exc:
            return problem(400, str(exc))
        except TooManyBarsError as exc:
            return problem(413, str(exc))
        except InvalidBodyError as exc:
            return invalid(exc)
        if shares.cap is not None and len(rows) > shares.cap:
            return problem(
                413,
                f"{len(rows)} {what} are more than a tenant's share of the write queue "
                f"({shares.cap}); send at most {shares.cap} per request",
            )
        if not await shares.acquire(tenant, len(rows)):
            return unavailable(
                coordinator,
                f"tenant {tenant} holds its share of the write queue; retry later",
                "tenant_share",
            )
        try:
            # ``rows`` as decoded, not a copy: a ``OnePerKey`` knows which items each
            # row stands for (``item_indices`` below)
            ticket = await coordinator.submit_all(rows)
        except QueueFullError:
            return unavailable(coordinator, "the write queue is full; retry later", "queue_full")
        except QueueClosedError:
            return unavailable(coordinator, "the service is shutting down", "shutting_down")
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
            result.dead_lettered_indices = item_indices(rows, ticket.lost_offsets())
        return Response(result, status_code=201)
