"""Backpressure feedback for consumers: an SSE stream and a JSON snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, MediaType, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import HeaderParameter, QueryParameter
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from market_data_store._util import ThrottledLog
from market_data_store.config import Settings
from market_data_store.coordinator import BackpressureLevel
from market_data_store.feedback import (
    KEEPALIVE,
    LEVEL_RANK,
    MAX_ID_LENGTH,
    FeedbackFanout,
    StreamRefusedError,
    Subscriber,
    sse,
)
from market_data_store.feedback.fanout import MAX_REMOTE_COORDINATORS
from market_data_store.service import Lifecycle

from ..problems import problem_responses

log = logging.getLogger(__name__)
_ended = ThrottledLog(log)

EVENT_STREAM = "text/event-stream"
REFUSED_RETRY_AFTER = 5
MAX_COORDINATOR_FILTERS = 100
EVENT_ID_PATTERN = r"^[0-9]{1,20}$"
"""An event id, in the document and in ``_event_id`` alike."""
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
# What _coordinator_filter checks, but "printable" (no JSON Schema for it: a 400 too).
_COORDINATOR_FILTER_SCHEMA = {
    "items": Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_ID_LENGTH),
    "max_items": MAX_COORDINATOR_FILTERS,
}


class FeedbackEventBody(msgspec.Struct):
    """Core ``FeedbackEvent`` plus ``reason``, ``utilization`` (queue_size / capacity) and,
    from this store's coordinators, ``drain_rate`` (items written per second over the
    last second) and ``credit`` (items one producer may have sent and not yet had
    answered)."""

    coordinator_id: str
    queue_size: int
    capacity: int
    level: Literal["ok", "soft", "hard"]
    source: str
    ts: float
    reason: str | None
    utilization: float
    drain_rate: float | msgspec.UnsetType = msgspec.UNSET
    credit: int | msgspec.UnsetType = msgspec.UNSET


class StreamEventBody(msgspec.Struct, omit_defaults=True):
    """One Server-Sent Event of the stream (``event: feedback`` or ``event: reset``;
    ``data`` is a FeedbackEventBody, or ``{"reason": ...}`` for a reset, as JSON)."""

    event: str | msgspec.UnsetType = msgspec.UNSET
    id: str | msgspec.UnsetType = msgspec.UNSET
    data: str | msgspec.UnsetType = msgspec.UNSET
    retry: int | msgspec.UnsetType = msgspec.UNSET


class FeedbackStateBody(msgspec.Struct):
    coordinators: list[FeedbackEventBody]


class FeedbackStream(ASGIResponse):
    """One subscriber's stream, written straight to the ASGI ``send``.

    Each frame was encoded once for every subscriber; this loop only joins what
    is buffered and sends it, or a keepalive when nothing was written for
    ``feedback.sse.heartbeat_sec``. A send that does not complete within
    ``send_timeout`` (the client stopped reading) ends the stream; so do the
    client going away, the subscriber lagging too far, and the service's
    shutdown (the stream ends at once, cleanly).

    A client that reads nothing is still taken bytes by its kernel until its socket
    buffers are full; with a keepalive of a few bytes that takes hours. So at most
    once per heartbeat a write carries padding (comment lines, ``keepalive_padding``)
    that fills ``STALLED_READER_BYTES`` of buffers within ``STALLED_READER_SEC``:
    then a send blocks, and ``send_timeout`` ends the stream.
    """

    __slots__ = (
        "_fanout",
        "_head",
        "_heartbeat",
        "_lifecycle",
        "_padding",
        "_send_timeout",
        "_sending",
        "_sub",
    )
    _should_set_content_length = False

    def __init__(
        self,
        fanout: FeedbackFanout,
        sub: Subscriber,
        head: bytes,
        send_timeout: float,
        lifecycle: Lifecycle,
        heartbeat: float,
    ) -> None:
        super().__init__(
            media_type=EVENT_STREAM,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self._fanout = fanout
        self._sub = sub
        self._head = head
        self._send_timeout = send_timeout
        self._lifecycle = lifecycle
        self._heartbeat = heartbeat
        self._padding = keepalive_padding(
            heartbeat, send_timeout, STALLED_READER_SEC, STALLED_READER_BYTES
        )
        self._sending: asyncio.Timeout | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub, fanout = self._sub, self._fanout
        transport = self._lifecycle.transport_of(scope)
        if transport is not None:
            _small_buffers(transport)
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        sub.on_close = self._hurry
        try:
            await self.start_response(send)
            loop = asyncio.get_running_loop()
            chunk: bytes | None = self._head
            padded = loop.time()  # the last write that carried padding
            while chunk is not None:
                written = loop.time()  # the keepalive is due keepalive_sec after this write
                if chunk is KEEPALIVE or written - padded >= self._heartbeat:
                    chunk = self._padding + chunk  # joins the first message of the chunk
                    padded = written
                if not await self._send(send, chunk, more=True):
                    fanout.send_timed_out(sub)
                    _ended.log(
                        logging.INFO,
                        "send_timeout",
                        "feedback stream ended: a send did not complete within %gs",
                        self._send_timeout,
                    )
                    break
                chunk = await sub.next_chunk(written)
            else:
                if await self._send(send, b"", more=False):
                    return
            # the client stopped reading: the response cannot be ended, the
            # connection's buffers would never drain; cut it
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
                await asyncio.sleep(0)  # the server learns of it before this response ends
        finally:
            watcher.cancel()
            fanout.unsubscribe(sub)

    async def _send(self, send: Send, chunk: bytes, *, more: bool) -> bool:
        """False when the send did not complete within the send timeout (or, once the
        stream is closed, within ``CLOSING_SEND_GRACE``)."""
        timeout = self._send_timeout if not self._sub.closed else CLOSING_SEND_GRACE
        try:
            async with asyncio.timeout(timeout) as self._sending:
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
        except TimeoutError:
            return False
        finally:
            self._sending = None
        return True

    def _hurry(self) -> None:
        """The stream was closed (shutdown, lagging, client gone): a send still blocked
        on a client that does not read gets ``CLOSING_SEND_GRACE``, not the full timeout."""
        sending = self._sending
        if sending is not None:
            deadline = asyncio.get_running_loop().time() + CLOSING_SEND_GRACE
            when = sending.when()
            if when is None or when > deadline:
                sending.reschedule(deadline)

    async def _watch_disconnect(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self._sub.close("disconnected")


CLOSING_SEND_GRACE = 0.5
"""Seconds a closed stream's last sends may take (shutdown must not wait on dead clients)."""
STREAM_SEND_BUFFER = 32 * 1024
"""Kernel send buffer of a stream's socket, and (half of it) the server's write buffer
limit: a client that stops reading blocks a send after tens of KiB, not megabytes."""
STALLED_READER_SEC = 300.0
"""A client that accepts no byte of its stream is disconnected within about this long
(once ``STALLED_READER_BYTES`` of its buffers are full, a send blocks for
``send_timeout``)..."""
STALLED_READER_BYTES = 1024 * 1024
"""... when its socket buffers hold at most this much: the padding streams write per
``STALLED_READER_SEC`` (about 3.5 KB/s of an idle stream). A client that does not read
keeps its kernel's default receive buffer (Linux: 128 KiB, at most 2 x
``net.core.rmem_max`` when it asks for more); one that read fast before it stalled
may have grown it to several MiB, and is cut after proportionally longer."""


@functools.lru_cache(maxsize=16)
def keepalive_padding(heartbeat: float, send_timeout: float, within: float, fill: int) -> bytes:
    """Comment lines that fill ``fill`` bytes of a stalled reader's buffers within
    ``within`` seconds when one write per ``heartbeat`` carries them (a send then blocks,
    and ``send_timeout`` ends the stream by ``within``). One bytes object per setting,
    shared by every stream."""
    writes = max(1, int(max(within - send_timeout, 0.0) // heartbeat) - 1)
    return sse.padding(min(fill, -(-fill // writes)))


def _small_buffers(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
    if isinstance(transport, asyncio.WriteTransport):
        transport.set_write_buffer_limits(high=STREAM_SEND_BUFFER // 2)


class FeedbackStateController(Controller):
    path = "/v1/feedback"
    tags = ["feedback"]

    @get(
        "/state",
        summary="The latest feedback event of every known coordinator",
        description="The stream's snapshot as JSON, for pollers.",
        sync_to_thread=False,
        responses={200: ResponseSpec(data_container=FeedbackStateBody, description="Snapshot")},
    )
    def state(self, feedback_fanout: NamedDependency[FeedbackFanout]) -> ASGIResponse:
        frames = feedback_fanout.snapshot()
        body = b'{"coordinators":[' + b",".join(f.data for f in frames) + b"]}"
        return ASGIResponse(body=body, media_type=MediaType.JSON)


class FeedbackStreamController(Controller):
    """Registered only with ``feedback.sse.enabled``."""

    path = "/v1/feedback"
    tags = ["feedback"]

    @get(
        "/stream",
        summary="Backpressure feedback as Server-Sent Events",
        description=(
            "`event: feedback` messages, `id:` strictly increasing, `data:` a Core "
            "FeedbackEvent (+ reason, utilization). First the latest event of every known "
            "coordinator (all replicas when Redis is configured), then live events. Resume "
            "with `Last-Event-ID` (or `last_event_id`): the events after it are replayed "
            "from a bounded history; when that cannot be done exactly (an id older than the "
            "history, in the future, or not one this process sent), `event: reset` comes "
            "first, then the snapshot. The snapshot holds at most "
            f"{MAX_REMOTE_COORDINATORS:,} coordinators of other replicas (besides this one's). "
            "A `coordinator_id` no one has reported yet is named once in "
            "a comment line at the start (the stream then goes on as usual). A keepalive "
            "comment whenever nothing was written for `feedback.sse.heartbeat_sec`; at most "
            "once per heartbeat a message is preceded by padding comment lines (so a client "
            "that reads nothing is disconnected within about 5 minutes). 503 with Retry-After "
            "past `feedback.sse.max_streams`, past `feedback.sse.max_streams_per_client` "
            "streams of one client address, or while shutting down."
        ),
        media_type=EVENT_STREAM,
        sync_to_thread=False,
        responses={
            200: ResponseSpec(
                data_container=StreamEventBody,
                media_type=EVENT_STREAM,
                description="The event stream (the schema is that of each event)",
                generate_examples=False,
            ),
            **problem_responses(
                s400="Bad filter or Last-Event-ID, or a repeated query parameter",
                s503=(
                    "Too many streams (of the server, or of this client address), or shutting "
                    "down; retry after Retry-After"
                ),
            ),
        },
    )
    def stream(
        self,
        request: Request[Any, Any, Any],
        feedback_fanout: NamedDependency[FeedbackFanout],
        settings: NamedDependency[Settings],
        lifecycle: NamedDependency[Lifecycle],
        coordinator_id: Annotated[
            list[str] | None,
            QueryParameter(
                description=(
                    f"Only these coordinators (repeatable; 1-{MAX_ID_LENGTH} printable characters)"
                ),
                schema_extra=_COORDINATOR_FILTER_SCHEMA,
            ),
        ] = None,
        min_level: Annotated[
            Literal["ok", "soft", "hard"] | None,
            QueryParameter(
                description="Only events at this level or above (and the one that ends such a "
                "level, so a consumer is told when it is over)"
            ),
        ] = None,
        last_event_id_header: Annotated[
            str | None,
            HeaderParameter(
                name="last-event-id",
                description="Resume after this id (checked, like the query parameter)",
                schema_extra={"pattern": EVENT_ID_PATTERN},
            ),
        ] = None,
        last_event_id: Annotated[
            str | None,
            QueryParameter(
                description="Resume after this id (when no header can be set; the header wins)",
                schema_extra={"pattern": EVENT_ID_PATTERN},
            ),
        ] = None,
    ) -> FeedbackStream:
        coordinators = _coordinator_filter(coordinator_id)
        # both are checked, whichever is used: a bad one is a 400 naming it
        from_header = _event_id(last_event_id_header, "last-event-id", "header")
        from_query = _event_id(last_event_id, "last_event_id", "query")
        resume = from_header if from_header is not None else from_query
        sse_settings = settings.feedback.sse
        client = client_key(request.client.host) if request.client is not None else None
        try:
            sub, reset = feedback_fanout.subscribe(
                coordinators=coordinators,
                min_rank=LEVEL_RANK[BackpressureLevel(min_level)] if min_level else 0,
                last_id=resume,
                client=client,
                max_per_client=sse_settings.max_streams_per_client,
            )
        except StreamRefusedError as exc:
            raise HTTPException(
                status_code=503,
                detail=str(exc),
                headers={"Retry-After": str(REFUSED_RETRY_AFTER)},
                extra={"retry_after": REFUSED_RETRY_AFTER, "reason": exc.reason},
            ) from None
        head = sse.retry(sse.RETRY_MS)
        if coordinators is not None:
            unknown = feedback_fanout.unknown(coordinators)
            if unknown:
                head += sse.comment(_not_reported(unknown, feedback_fanout.coordinator_ids()))
        if reset:
            # the id just before what follows: resuming from it replays the snapshot
            first = sub.first_id
            reset_id = feedback_fanout.last_id if first is None else first - 1
            head += sse.frame(reset_id, "reset", b'{"reason":"last_event_id_unknown"}')
        return FeedbackStream(
            feedback_fanout,
            sub,
            head,
            sse_settings.send_timeout,
            lifecycle,
            sse_settings.heartbeat_sec,
        )


def client_key(host: str) -> str:
    """What ``feedback.sse.max_streams_per_client`` counts for a client at ``host``:
    ``scope["client"]``'s address (the forwarding client's when uvicorn trusts the proxy,
    ``forwarded_allow_ips``; without an address, a Unix socket, only the server's cap
    applies). An IPv6 address counts as its /64 (one host's, however many addresses
    of it a client uses); IPv4-mapped ones as the IPv4 address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _coordinator_filter(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    errors = []
    if len(values) > MAX_COORDINATOR_FILTERS:
        errors.append(
            {"key": "coordinator_id", "message": f"at most {MAX_COORDINATOR_FILTERS} values"}
        )
    for value in values:
        if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
            errors.append(
                {
                    "key": "coordinator_id",
                    "message": f"must be 1-{MAX_ID_LENGTH} printable characters",
                }
            )
            break
    if errors:
        raise ValidationException("invalid query parameters", extra=errors)
    return values


NOT_REPORTED_NAMES = 10
"""At most this many ids of each kind in the comment of ``_not_reported``..."""
NOT_REPORTED_ID_CHARS = 64
"""... each cut to this many characters (then ``…``): the line stays a few KiB."""


def _not_reported(unknown: list[str], known: list[str]) -> str:
    """``no coordinator "a" or "b" has reported yet; known: "h/bars"``: each id as a JSON
    string (no line break can get into the stream), at most ``NOT_REPORTED_NAMES`` of
    each list (then ``and N more``), each of at most ``NOT_REPORTED_ID_CHARS``."""
    return (
        f"no coordinator {_names(unknown, ' or ')} has reported yet; "
        f"known: {_names(known, ', ') if known else 'none'}"
    )


def _names(ids: list[str], sep: str) -> str:
    cut = NOT_REPORTED_ID_CHARS
    shown = [
        msgspec.json.encode(i if len(i) <= cut else i[: cut - 1] + "…").decode()
        for i in ids[:NOT_REPORTED_NAMES]
    ]
    text = sep.join(shown)
    if len(ids) > NOT_REPORTED_NAMES:
        text += f" and {len(ids) - NOT_REPORTED_NAMES} more"
    return text


def _event_id(text: str | None, key: str, source: str) -> int | None:
    """The id ``text`` names (``None``: not given); 400 naming ``key`` unless it is
    ``EVENT_ID_PATTERN``, as the document says (an empty value is not an id either)."""
    if text is None:
        return None
    if _EVENT_ID.search(text) is None:
        raise ValidationException(
            f"invalid {key}",
            extra=[{"key": key, "source": source, "message": f"must match {EVENT_ID_PATTERN}"}],
        )
    return int(text)
