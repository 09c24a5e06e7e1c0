"""How the transport protocol refuses a request and ends a connection.

A refusal is answered with a problem+json body only when nothing of a response was
sent for that request yet (a request pipelined behind one still being answered is
refused after that answer); the connection then stops reading (data is discarded)
and closes once the client closes or after a short linger, so the client reads the
answer instead of a reset. A connection whose unsent answer does not shrink for
``read_timeout`` seconds is aborted (the write-stall rule of ``server.protocol``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from market_data_store.http.problems import problem_body, reason_phrase

from .limits import TransportLimits, TransportStats

# Seconds a refused connection keeps discarding what the client still sends before
# it is closed (closing with unread data would reset the connection, and the client
# would likely lose the answer).
LINGER_SECONDS = 2.0


def problem_response(
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    instance: str = "",
    retry_after: int | None = None,
) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 problem+json response, with the
    members every problem of the service has (``instance``: the request path, empty
    when it is not known) and ``retry_after`` when given (also as the header)."""
    phrase = reason_phrase(status)
    extensions: dict[str, Any] = {}
    if retry_after is not None:
        extensions["retry_after"] = retry_after
        headers = {**(headers or {}), "retry-after": str(retry_after)}
    body = json.dumps(problem_body(status, detail, instance=instance, **extensions)).encode()
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "content-type: application/problem+json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class RefusingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that refuses with ``_refuse`` and ends connections
    without being held by a client that does not read (see the module docstring)."""

    limits: ClassVar[TransportLimits]
    stats: ClassVar[TransportStats]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lingering = False  # refused (or done): what the client sends is discarded
        self._deferred: bytes | None = None  # a refusal to send once the current answer ends
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_pending = 0
        self._lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg, headers_phase=True)

    def on_response_complete(self) -> None:
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            super().on_response_complete()
        else:  # a refusal waited for this answer
            self.server_state.total_requests += 1
            if not self.transport.is_closing():
                self._answer(deferred)
        if self.transport.is_closing():
            self._watch_writes()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._watch_writes()

    def _cancel_timers(self) -> None:
        """Stops the read timers of the request refused (a subclass's; none here)."""

    # -- writing ------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.flow.pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self._write_timer is not None and not self.transport.is_closing():
            self._write_timer.cancel()
            self._write_timer = None

    def _watch_writes(self) -> None:
        """While an answer waits to be sent (writing paused, or a closing transport's
        last bytes), abort the connection if it does not shrink for read_timeout."""
        if self._write_timer is not None or self._lost:
            return
        pending = self.transport.get_write_buffer_size()
        if pending:
            self._write_pending = pending
            self._write_timer = self.loop.call_later(self.limits.read_timeout, self._write_check)

    def _write_check(self) -> None:
        self._write_timer = None
        if self._lost or not (self.flow.write_paused or self.transport.is_closing()):
            return
        pending = self.transport.get_write_buffer_size()
        if not pending:
            return
        if pending < self._write_pending:  # the client takes it, however slowly
            self._write_pending = pending
            self._write_timer = self.loop.call_later(self.limits.read_timeout, self._write_check)
            return
        self.stats.write_timeouts += 1
        self.transport.abort()

    # -- refusing -----------------------------------------------------------------

    def _refuse(
        self,
        status: int,
        detail: str,
        *,
        headers_phase: bool,
        retry_after: int | None = None,
    ) -> None:
        """Answer ``status`` if nothing was sent for this request yet, then close."""
        cycle = self.cycle
        try:  # the path of the request refused, when its line was parsed
            instance = httptools.parse_url(getattr(self, "url", b"")).path.decode("ascii")
        except (httptools.HttpParserError, UnicodeDecodeError):
            instance = ""
        response = problem_response(status, detail, instance=instance, retry_after=retry_after)
        if headers_phase:
            can_answer = cycle is None or cycle.response_complete
            if not can_answer and not cycle.disconnected:
                # the previous request is still being answered: refuse after it
                self._deferred = response
                self._cancel_timers()
                self._lingering = True
                self.pipeline.clear()
                self.flow.resume_reading()
                return
        else:
            can_answer = cycle is not None and not cycle.response_started
            if cycle is not None and not cycle.response_complete:
                # the app sees a disconnect: its receive() returns, its send() is a no-op
                cycle.disconnected = True
                cycle.message_event.set()
        self._cancel_timers()
        self._lingering = True
        self.pipeline.clear()
        if not can_answer:
            self.transport.close()
            self._watch_writes()
            return
        self._answer(response)

    def _answer(self, response: bytes) -> None:
        self.transport.write(response)
        self.flow.resume_reading()  # drain what the client still sends, unanswered
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(min(LINGER_SECONDS, self.limits.read_timeout), self._end_linger)

    def _end_linger(self) -> None:
        if not self._lost:
            self.transport.close()  # flushes what is left, within the write-stall rule
            self._watch_writes()


__all__ = ["LINGER_SECONDS", "RefusingProtocol", "problem_response"]
