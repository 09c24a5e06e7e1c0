"""uvicorn's httptools protocol with the transport limits uvicorn lacks.

uvicorn bounds only the idle time between keep-alive requests. This protocol adds:

- **read timeout**: a request whose headers are not complete ``read_timeout``
  seconds after its first byte (after the connection opened, for its first
  request), or whose body makes no progress for ``read_timeout`` seconds, is
  answered 408 and the connection closed. A connection that never sent a byte is
  closed without an answer.
- **minimum body rate** (``min_body_rate`` bytes/s; the rule of Apache's
  ``mod_reqtimeout``): a body must be received by ``read_timeout + received /
  min_body_rate`` seconds after its headers, so a client trickling 2 bytes/s is
  ended after about ``read_timeout`` although it never stalls. Time in which the
  server itself does not read (the app has not consumed the buffered body yet, or
  has not asked for it behind ``Expect: 100-continue``) is not held against the
  client.
- **header size**: request line and headers beyond ``max_header_bytes`` are
  answered 431 and the connection closed, before the excess is parsed.
- **header size**, also for a request pipelined behind another in one read: its
  line and headers are counted as the parser reports them.
- **write stall**: a connection whose unsent answer (uvicorn's write buffer above
  its high-water mark, or a closing connection's last bytes) does not shrink for
  ``read_timeout`` seconds is aborted - a client that never reads its answers
  would otherwise hold its connection (and its ``max_connections`` slot) forever,
  ``close()`` waiting for a flush that never comes.
- **connection cap**: beyond ``max_connections`` open connections, a new
  connection's request is answered 503 + ``Retry-After`` (without waiting for its
  body) and the connection closed, except requests to ``probe_paths`` (kubelet
  probes), which are served - each such connection serves one request and is
  closed.
- **probe reserve**: at most ``probe_reserve`` connections beyond the cap are open
  at once, so that connections nobody serves cannot take the descriptors the
  probes need. A new one beyond them takes the place of the oldest that is not
  serving a probe (waiting for its request, or refused): that one is closed at
  once, without an answer. Only when every one of them serves a probe is the new
  one closed at once instead. An idle connection therefore holds a descriptor
  beyond the cap only until ``probe_reserve`` newer ones arrived, not for
  ``read_timeout``.
- **malformed requests** (what the parser refuses: conflicting ``Content-Length``,
  ``Content-Length`` with ``Transfer-Encoding``, unknown method...) are answered
  400 problem+json, not uvicorn's plain text; the warning, as that of ``Upgrade``
  requests (no WebSocket support: answered as plain HTTP), is logged at most once
  per 10 s with a count.

Refusals are answered with a problem+json body only when nothing of a response was
sent for that request yet, then the connection is closed without a reset: see
``server.refusal``, the layer below this one (which also holds the write-stall rule).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import httptools
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from market_data_store._util import ThrottledLog

from .flow import TimedFlowControl
from .limits import TransportLimits, TransportStats
from .refusal import RefusingProtocol

log = logging.getLogger(__name__)
_warnings = ThrottledLog(log)  # per kind of client mistake: once per 10 s, with a count


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head over ``max_header_bytes``."""


def _probe_app(app: ASGI3Application) -> ASGI3Application:
    """The app of a connection beyond the cap (only probes reach it): served, and
    the connection closed after."""

    async def probe(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        async def send_and_close(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_and_close)

    return probe


class GuardedHttpToolsProtocol(RefusingProtocol):
    """See the module docstring; make a configured subclass with ``guarded_protocol``."""

    # the connections holding a probe-reserve place that may be closed to make room
    # (not serving a probe), oldest first; one per server, set by guarded_protocol
    closable: ClassVar[dict[GuardedHttpToolsProtocol, None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted = False
        self._reserved = False  # beyond the cap, holding a place of the probe reserve
        self._reading_headers = True  # between two requests or inside a head
        self._request_begun = False  # a byte of the current request arrived
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        # the body of the current request
        self._body_pending = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_start = 0.0
        self._body_paused_at_start = 0.0
        self._body_received = 0
        self._body_last = 0.0
        self._body_paused_at_last = 0.0
        self._timed_flow: TimedFlowControl | None = None
        self._head_bytes = 0  # line and headers of the request being parsed, as parsed
        self._head_too_large = False

    # -- connection -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        stats, limits = self.stats, self.limits
        if stats.open_connections < limits.max_connections:
            stats.open_connections += 1
            self._admitted = True
        else:
            stats.over_capacity += 1
            self.app = _probe_app(self.app)
            self._reserved = self._take_reserve_place()
        super().connection_made(transport)
        self._timed_flow = self.flow = TimedFlowControl(transport, self.loop.time)
        if not (self._admitted or self._reserved):
            self._shed()  # every place of the reserve serves a probe
            return
        self._header_timer = self.loop.call_later(limits.read_timeout, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self.stats.open_connections -= 1
        self._leave_reserve()
        self._cancel_timers()
        super().connection_lost(exc)  # the refusal layer's: marks it lost, stops its timer

    # -- the probe reserve --------------------------------------------------------

    def _take_reserve_place(self) -> bool:
        """A place of the probe reserve for this connection beyond the cap: a free one,
        else that of the oldest connection not serving a probe (closed now); False
        when every place serves a probe."""
        stats, closable = self.stats, self.closable
        while stats.reserve_open >= self.limits.probe_reserve and closable:
            oldest = next(iter(closable))
            oldest._leave_reserve()
            if not oldest.transport.is_closing():  # closing already: its place is free
                oldest._shed()
        if stats.reserve_open >= self.limits.probe_reserve:
            return False
        stats.reserve_open += 1
        closable[self] = None
        return True

    def _leave_reserve(self) -> None:
        if self._reserved:
            self._reserved = False
            self.stats.reserve_open -= 1
            self.closable.pop(self, None)

    def _shed(self) -> None:
        """Close a connection beyond the cap that is not serving a probe: without an
        answer (it asked nothing yet), or after its refusal (already written)."""
        self.stats.reserve_closed += 1
        _warnings.log(
            logging.WARNING,
            "reserve",
            "a connection beyond server.max_connections (%d) closed without serving it, to"
            " keep the descriptors of the probes (%d such connections at most): many idle"
            " clients, or a cap too low for the load",
            self.limits.max_connections,
            self.limits.probe_reserve,
        )
        self._cancel_timers()
        self._lingering = True
        self.transport.close()
        self._watch_writes()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._reading_headers:
            room = self.limits.max_header_bytes - self._header_bytes
            if len(data) > room:
                # feed what the limit allows: the headers may end inside it
                self._feed(data[:room])
                if self._lingering or self.transport.is_closing():
                    return
                if self._reading_headers:
                    self._refuse_oversize_head()
                    return
                self.data_received(data[room:])
                return
            self._header_bytes += len(data)
            # in the head phase any byte begins a request (if these bytes end it and
            # begin a pipelined one, uvicorn's keep-alive timeout bounds the latter)
            self._request_begun = True
        self._feed(data)
        # timers only for requests that did not arrive whole in one read (a closed
        # transport's timers are cancelled by connection_lost)
        if self._reading_headers:
            if self._request_begun and self._header_timer is None and not self._lingering:
                self._header_timer = self.loop.call_later(
                    self.limits.read_timeout, self._header_timeout
                )
        elif self._body_pending and self._body_timer is None and not self._lingering:
            self._start_body_clock()

    def _refuse_oversize_head(self) -> None:
        self.stats.oversize_headers += 1
        self._refuse(
            431,
            f"request line and headers exceed {self.limits.max_header_bytes} bytes",
            headers_phase=True,
        )

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with our answers to what the parser refuses."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():  # never: the server runs with ws="none"
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if self._lingering or self.transport.is_closing():
                return
            if self._head_too_large:
                self._refuse_oversize_head()
                return
            cause = exc.__cause__ or exc.__context__
            reason = str(exc if cause is None else cause) or type(exc).__name__
            self.stats.bad_requests += 1
            _warnings.log(logging.WARNING, "invalid", "invalid HTTP request received: %s", reason)
            self._refuse(400, f"invalid HTTP request: {reason}", headers_phase=True)

    def _unsupported_upgrade_warning(self) -> None:
        _warnings.log(
            logging.WARNING,
            "upgrade",
            "Upgrade request received: no protocol upgrade is supported, answered as plain HTTP",
        )

    # -- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, size: int) -> None:
        # a head that arrived across reads is limited before it is parsed (in
        # data_received); this catches one pipelined behind another in the same read
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes and not self._lingering:
            self._head_too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        if self._lingering:  # parsed behind a refusal in the same read: ignored
            return
        self._reading_headers = False
        self._header_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if not self._admitted:
            if self.cycle is not None:  # an over-cap connection serves one request
                self._lingering = True
                return
            if httptools.parse_url(self.url).path.decode("ascii", "replace") not in (
                self.limits.probe_paths
            ):
                self._refuse(
                    503,
                    "too many open connections; retry later",
                    headers_phase=True,
                    retry_after=self.limits.retry_after,
                )
                return
            self.closable.pop(self, None)  # serving a probe: keeps its place
        self._body_pending = True
        self._body_received = 0
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if self._lingering:
            return
        super().on_body(body)
        self._body_received += len(body)
        if self._body_timer is not None:
            self._body_last = self.loop.time()
            assert self._timed_flow is not None
            self._body_paused_at_last = self._timed_flow.paused_time(self._body_last)

    def on_message_complete(self) -> None:
        if self._lingering:
            return
        HttpToolsProtocol.on_message_complete(self)
        self._reading_headers = True
        self._request_begun = False
        self._body_pending = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # -- the timers ---------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._lingering:
            return
        if not self._request_begun:  # never sent anything: an idle connection
            self.transport.close()
            self._watch_writes()
            return
        self.stats.header_timeouts += 1
        self._refuse(
            408,
            f"request headers not complete within {self.limits.read_timeout:g} s",
            headers_phase=True,
        )

    def _start_body_clock(self) -> None:
        assert self._timed_flow is not None
        now = self.loop.time()
        self._body_start = self._body_last = now
        self._body_paused_at_start = self._body_paused_at_last = self._timed_flow.paused_time(now)
        self._body_timer = self.loop.call_later(self.limits.read_timeout, self._body_check)

    def _body_check(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._lingering or not self._body_pending:
            return
        assert self._timed_flow is not None
        now = self.loop.time()
        limits = self.limits
        if self.cycle is not None and self.cycle.waiting_for_100_continue:
            # the client waits for our "100 Continue": its body clock has not started
            self._start_body_clock()
            return
        paused = self._timed_flow.paused_time(now)
        stalled = (now - self._body_last) - (paused - self._body_paused_at_last)
        deadline = now + limits.read_timeout - stalled
        if limits.min_body_rate:
            allowed = limits.read_timeout + self._body_received / limits.min_body_rate
            elapsed = (now - self._body_start) - (paused - self._body_paused_at_start)
            deadline = min(deadline, now + allowed - elapsed)
        if deadline > now and not self._timed_flow.read_paused:
            self._body_timer = self.loop.call_later(deadline - now, self._body_check)
            return
        if self._timed_flow.read_paused:  # our doing: look again later
            self._body_timer = self.loop.call_later(limits.read_timeout, self._body_check)
            return
        self.stats.body_timeouts += 1
        rule = (
            f"no progress for {limits.read_timeout:g} s"
            if stalled >= limits.read_timeout
            else f"slower than {limits.min_body_rate} bytes/s"
        )
        self._refuse(408, f"request body {rule}", headers_phase=False)


def guarded_protocol(
    limits: TransportLimits, stats: TransportStats | None = None
) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``."""

    class Protocol(GuardedHttpToolsProtocol):
        pass

    Protocol.limits = limits
    Protocol.stats = stats if stats is not None else TransportStats()
    Protocol.closable = {}
    return Protocol


__all__ = ["GuardedHttpToolsProtocol", "guarded_protocol"]
