"""Follows ``GET /v1/feedback/stream`` (Server-Sent Events) for the client.

Reconnects by itself with ``Last-Event-ID`` (the store replays what was missed,
or says ``event: reset`` and sends its snapshot again), waiting the stream's
``retry:`` hint (taken within 0.1 s and ``max_delay``), doubled after each failed
attempt up to ``max_delay``, randomised to 50-100 %. A connection that shows
nothing (not even a keepalive) for ``idle_timeout`` s is dropped and replaced.
Nothing here ever blocks a write: the client works without the stream, reacting
to answers and 503s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from market_data_store._util import ThrottledLog, backoff_delay

from .wire import BAD_JSON, Feedback, decode_feedback, server_number

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/feedback/stream"
MAX_LINE = 64 * 1024
"""Longest line (and event data) accepted; an event is a few hundred bytes."""
DEFAULT_RETRY = 2.0
MIN_RETRY_MS = 100
"""The shortest ``retry:`` taken (a shorter one is raised to it); the longest is
``max_delay``."""


class StreamError(Exception):
    """The stream answered something that is not an event stream (or broke its framing)."""


class FeedbackFollower:
    """Reads the stream until cancelled; reports events, resets and (dis)connections."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        on_event: Callable[[Feedback], None],
        on_reset: Callable[[], None],
        on_live: Callable[[bool], None],
        connect_timeout: float = 10.0,
        idle_timeout: float = 45.0,
        max_delay: float = 30.0,
        path: str = STREAM_PATH,
    ) -> None:
        self._http = http
        self._on_event = on_event
        self._on_reset = on_reset
        self._on_live = on_live
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=idle_timeout, write=connect_timeout, pool=connect_timeout
        )
        self._max_delay = max_delay
        self._path = path
        self._failures = ThrottledLog(log)
        self.last_event_id: str | None = None
        self.retry = DEFAULT_RETRY
        self.connects = 0
        self.events = 0
        self.bad_events = 0

    async def run(self) -> None:
        failed = 0
        while True:
            delivered = 0
            try:
                delivered = await self._follow()
            except (httpx.HTTPError, StreamError, TimeoutError, OSError) as exc:
                self._failures.log(
                    logging.INFO,
                    "stream",
                    "feedback stream unavailable (%s); reacting to answers meanwhile",
                    _describe(exc),
                )
            except Exception:  # a bug must not end the follower: log, keep going
                self._failures.log(logging.ERROR, "bug", "feedback stream failed", exc=True)
            failed = 0 if delivered else failed + 1
            # after a connection that delivered, the first step again
            delay = backoff_delay(
                max(1, failed), initial=self.retry, maximum=self._max_delay, jitter=True
            )
            await asyncio.sleep(delay)

    async def _follow(self) -> int:
        """One connection; the number of messages it delivered."""
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if self.last_event_id is not None:
            headers["last-event-id"] = self.last_event_id
        delivered = 0
        async with self._http.stream(
            "GET", self._path, headers=headers, timeout=self._timeout
        ) as response:
            if response.status_code != 200:
                raise StreamError(f"HTTP {response.status_code}")
            media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
            if media_type != "text/event-stream":
                raise StreamError(f"content type {media_type!r}")
            self.connects += 1
            self._on_live(True)
            try:
                parser = _Parser()
                async for chunk in response.aiter_bytes():
                    for message in parser.feed(chunk):
                        delivered += 1
                        self._dispatch(message)
            finally:
                self._on_live(False)
        return delivered

    def _dispatch(self, message: _Message) -> None:
        if message.retry is not None:
            ms = server_number(
                message.retry, "the stream's retry:", low=MIN_RETRY_MS, high=self._max_delay * 1000
            )
            if ms is not None:
                self.retry = ms / 1000
        if message.id is not None:
            self.last_event_id = message.id
        if message.event == "reset":
            self._on_reset()
        elif message.event == "feedback":
            try:
                event = decode_feedback(message.data, "stream")
            except BAD_JSON:
                self.bad_events += 1
                return
            self.events += 1
            self._on_event(event)


class _Message:
    __slots__ = ("data", "event", "id", "retry")

    def __init__(self) -> None:
        self.event: str | None = None
        self.id: str | None = None
        self.data = ""
        self.retry: str | None = None  # as sent: the follower reads it (server_number)


class _Parser:
    """SSE framing (LF or CRLF line ends) with bounded lines and event data."""

    def __init__(self) -> None:
        self._rest = b""
        self._message = _Message()
        self._seen = False

    def feed(self, chunk: bytes) -> list[_Message]:
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()
        if len(self._rest) > MAX_LINE:
            raise StreamError("line too long")
        out: list[_Message] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._seen:
                    out.append(self._message)
                    self._message, self._seen = _Message(), False
                continue
            self._line(line.decode("utf-8", "replace"))
        return out

    def _line(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        message = self._message
        if name == "":
            return  # a comment (keepalive)
        self._seen = True
        if name == "event":
            message.event = value
        elif name == "data":
            message.data = f"{message.data}\n{value}" if message.data else value
            if len(message.data) > MAX_LINE:
                raise StreamError("event data too long")
        elif name == "id":
            if "\0" not in value:
                message.id = value
        elif name == "retry":
            message.retry = value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
