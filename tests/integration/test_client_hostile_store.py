"""The producer client against a broken or hostile store: a real HTTP/1.1 server on a
socket that answers what each test scripts (holds longer than the deadline, numbers of
hundreds of digits, a stream's ``retry:`` of thousands). What the client must do: cut
holds to ``max_hold``, wait a hold the deadline cannot fit until the deadline, and turn
any number out of range into a warning, never a traceback or a failed batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from market_data_store._util import ThrottledLog
from market_data_store.client import DeadlineExceededError, Feedback, StoreClient, wire
from market_data_store.client.wire import MAX_COUNT
from tests.support.bars import wire_bars
from tests.support.waits import until

HUGE = b"9" * 400
"""A number of 400 digits: more than a float holds (``float()`` of it overflows)."""
STREAM = "/v1/feedback/stream"


def answer(status: int, body: bytes, **headers: str) -> bytes:
    """One raw HTTP/1.1 answer; ``headers`` with ``_`` for ``-``, a Content-Length
    added unless given."""
    head = {"content-type": "application/json", "content-length": str(len(body))}
    head.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in head.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def accepted(count: int, **fields: bytes) -> bytes:
    """A 202 of the store for ``count`` bars; ``fields`` replace its numbers as raw JSON."""
    values = {"queue_size": b"0", "capacity": b"1000", "credit": b"5000", **fields}
    body = b'{"accepted":%d,"level":"ok","coordinator_id":"s/bars"' % count
    body += b"".join(b',"%s":%s' % (k.encode(), v) for k, v in values.items()) + b"}"
    return answer(202, body)


class HostileStore:
    """``POST /v1/bars`` answered from ``script`` (raw answers, in order), then with
    ``accepted``; ``GET /v1/feedback/stream`` answered with ``stream`` (raw SSE bytes),
    the connection kept open. Records when each POST came and how many bars it had."""

    def __init__(self) -> None:
        self.script: deque[bytes] = deque()
        self.stream: bytes | None = None
        self.posts: list[tuple[float, int]] = []
        self.stream_requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HostileStore:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._closing.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self._closing.is_set():
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                length = 0
                while (header := await reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if method == "GET" and path.startswith(STREAM):
                    self.stream_requests += 1
                    if self.stream is None:
                        writer.write(answer(404, b"{}"))
                        continue
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"cache-control: no-cache\r\nconnection: close\r\n\r\n" + self.stream
                    )
                    await self._closing.wait()  # a stream stays open
                    return
                count = len(msgspec.msgpack.decode(body)["bars"])
                self.posts.append((time.monotonic(), count))
                writer.write(self.script.popleft() if self.script else accepted(count))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the warnings of its own values (they are throttled per kind of
    value for the whole process, over 10 s)."""
    monkeypatch.setattr(wire, "_warn", ThrottledLog(wire.log))


@pytest.fixture
async def store() -> AsyncIterator[HostileStore]:
    server = await HostileStore().start()
    try:
        yield server
    finally:
        await server.close()


def client(store: HostileStore, **options: Any) -> StoreClient:
    """Queued mode, one request at a time, without the stream unless asked."""
    options.setdefault("wait_commit", False)
    options.setdefault("follow_feedback", False)
    options.setdefault("max_in_flight", 1)
    options.setdefault("initial_backoff", 0.01)
    options.setdefault("max_backoff", 0.02)
    return StoreClient(store.url, provider="p", **options)


def refused(body: bytes = b'{"status":503}', **headers: str) -> bytes:
    return answer(503, body, content_type="application/problem+json", **headers)


async def delivered_after(store: HostileStore, hostile: bytes) -> StoreClient:
    """A client that writes 3 bars, answered ``hostile`` and then accepted: the batch is
    sent twice and delivered, nothing handed back (the client is returned, closed)."""
    store.script.append(hostile)
    async with client(store, deadline=10, max_hold=0.2) as c:
        await c.write(wire_bars(3))
        await c.flush(timeout=10)
    assert [count for _, count in store.posts] == [3, 3]
    assert c.take_failures() == []
    return c


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == level]


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage()[:200] for r in errors]


# -- issue 18, item 8: a hold longer than the deadline, and the cap ---------------------


async def test_a_retry_after_beyond_the_deadline_holds_the_batch_until_its_deadline(
    store: HostileStore,
) -> None:
    """Retry-After 120 with a deadline of 1.5 s: the batch fails at its deadline with
    the usual "not stored within", not at once (0.4.0 - 0.5.0 failed it after a few
    ms: the bars came back while the store still held every request)."""
    store.script.extend([refused(Retry_After="120")] * 5)
    c = client(store, deadline=1.5)
    await c.write(wire_bars(3))
    began = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"not stored within 1\.5s") as info:
        await c.flush(timeout=10)
    took = time.monotonic() - began
    await c.aclose()
    assert 1.3 <= took < 3, took
    assert len(store.posts) == 1  # nothing was sent again inside the hold
    assert info.value.last_error is not None
    assert "503" in info.value.last_error
    assert len(info.value.bars) == 3


async def test_a_retry_after_is_cut_to_max_hold_where_the_client_waits(
    store: HostileStore,
) -> None:
    """Retry-After 120, ``max_hold`` 0.3: the retry goes after 0.3-0.33 s and lands."""
    store.script.append(refused(Retry_After="120"))
    async with client(store, deadline=10, max_hold=0.3) as c:
        await c.write(wire_bars(3))
        await c.flush(timeout=10)
    (first, _), (second, count) = store.posts
    assert 0.3 <= second - first < 1.5
    assert count == 3
    assert c.stats.bars_accepted == 3
    assert c.stats.refused == 1


def test_max_hold_defaults_to_the_documented_60_seconds() -> None:
    c = StoreClient("http://127.0.0.1:9", provider="p")
    assert c._throttle.max_hold == 60.0
    with pytest.raises(ValueError, match="max_hold"):
        StoreClient("http://127.0.0.1:9", provider="p", max_hold=0)


# -- issue 18, item 9: hostile numbers --------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    [
        refused(b'{"status":503,"retry_after":' + HUGE + b"}"),
        refused(b'{"status":503,"retry_after":-1e308}'),
        refused(b'{"status":503,"retry_after":"soon"}'),
        refused(Retry_After=HUGE.decode()),
        refused(Retry_After="-5"),
        refused(Retry_After="nan"),
        refused(Retry_After="Fri, 31 Dec 99999 23:59:59 GMT"),
    ],
    ids=[
        "body-400-digits",
        "body-negative",
        "body-text",
        "header-400-digits",
        "header-negative",
        "header-nan",
        "header-bad-date",
    ],
)
async def test_a_hostile_retry_after_is_clamped_and_the_batch_delivered(
    store: HostileStore, hostile: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """0.5.0: a body ``retry_after`` of 400 digits raised OverflowError in the sender
    ("sending failed unexpectedly", the batch failed)."""
    caplog.set_level(logging.WARNING)
    c = await delivered_after(store, hostile)
    assert c.stats.bars_accepted == 3
    no_errors(caplog)
    warned = " ".join(r.getMessage() for r in records(caplog, logging.WARNING))
    assert "Retry-After" in warned or "retry_after" in warned
    assert "9" * 50 not in warned  # the value is shown cut


async def test_hostile_numbers_in_an_answer_are_clamped_and_nothing_fails(
    store: HostileStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A 202 with a queue of 400 digits (0.5.0: OverflowError computing the
    utilization, the accepted batch handed back as failed), a negative credit, a
    capacity of 400 digits: clamped with a warning; the next batches go on."""
    caplog.set_level(logging.WARNING)
    store.script.append(accepted(4, queue_size=HUGE, capacity=b"100", credit=b"-5"))
    # the credit of 0 sends the next part alone: one bar
    store.script.append(accepted(1, queue_size=b"-3", capacity=HUGE, credit=HUGE))
    events: list[Feedback] = []
    async with client(store, batch_size=4, on_feedback=events.append) as c:
        await c.write(wire_bars(12))
        await c.flush(timeout=10)
    assert sum(count for _, count in store.posts) == 12
    assert c.stats.bars_accepted == 12
    assert c.take_failures() == []
    no_errors(caplog)
    assert all(0 <= e.queue_size <= MAX_COUNT for e in events)
    assert all(0 <= (e.utilization or 0) <= MAX_COUNT for e in events)
    warned = " ".join(r.getMessage() for r in records(caplog, logging.WARNING))
    assert "queue_size" in warned
    assert "credit" in warned


@pytest.mark.parametrize("path", ["lean", "httpx"])
async def test_a_content_length_of_5000_digits_is_a_transport_error_retried(
    store: HostileStore, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """0.5.0's lean HTTP/1.1 pool raised ValueError (int() of more than 4,300 digits):
    "sending failed unexpectedly", the batch failed. Now a protocol error, retried, as
    through httpx."""
    store.script.append(answer(202, b"{}", content_length="9" * 5000))
    transport = httpx.AsyncHTTPTransport() if path == "httpx" else None
    async with client(store, deadline=10, transport=transport) as c:
        await c.write(wire_bars(3))
        await c.flush(timeout=10)
    assert [count for _, count in store.posts] == [3, 3]
    assert c.stats.transport_errors == 1
    assert c.take_failures() == []
    no_errors(caplog)


async def test_a_stream_retry_of_5000_digits_is_a_warning_and_the_stream_goes_on(
    store: HostileStore, caplog: pytest.LogCaptureFixture
) -> None:
    """0.5.0: ``retry: <5000 digits>`` raised ValueError in the SSE parser, logged as
    an ERROR traceback ("feedback stream failed"), and the connection was dropped with
    the events behind it. Now the hint is cut to the follower's longest delay."""
    caplog.set_level(logging.WARNING)
    event = (
        b'{"coordinator_id":"s/bars","queue_size":' + HUGE + b',"capacity":10,'
        b'"level":"soft","source":"store","ts":1.0,"credit":-7}'
    )
    store.stream = (
        b"retry: soon\n\nretry: -5\n\n"
        b"retry: " + b"9" * 5000 + b"\n\n"
        b"event: feedback\nid: 1\ndata: " + event + b"\n\n"
    )
    events: list[Feedback] = []
    async with client(store, follow_feedback=True, on_feedback=events.append) as c:
        await until(lambda: events, timeout=5, what="the event after the hostile retry:")
        assert c.stream_connected
        assert c.level == "soft"
        await c.write(wire_bars(3))
        await c.flush(timeout=10)
        follower = c._follower
        assert follower is not None
        assert follower.retry == 30.0  # the 5,000 digits, cut to max_delay
        assert follower.connects == 1  # the stream was never dropped
    assert (events[0].queue_size, events[0].credit) == (MAX_COUNT, 0)
    assert c.stats.bars_accepted == 3
    no_errors(caplog)
    warned = [r.getMessage() for r in records(caplog, logging.WARNING)]
    assert any("retry:" in m for m in warned), warned
    assert all(len(m) < 300 for m in warned)


# -- review of issue 18: text that made the client slow or fail -------------------------

BACKTRACKING = b"1" * 200_000 + b"x"  # digits, then not a number


@pytest.mark.parametrize(
    "hostile",
    [
        refused(b'{"status":503,"retry_after":"' + BACKTRACKING + b'"}'),
        refused(Retry_After=BACKTRACKING.decode()),
        refused(b"[" * 3000 + b"]" * 3000),  # nesting too deep for the decoder
        refused(b'{"status":503,"detail":"\xff"}'),  # not UTF-8: a proxy's Latin-1 page
    ],
    ids=["body-digits-then-text", "header-digits-then-text", "deep-nesting", "not-utf-8"],
)
async def test_a_refusal_the_client_cannot_read_is_retried_at_once(
    store: HostileStore, hostile: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The review of issue 18: the number pattern backtracked quadratically on digits
    followed by text (200,000 digits: minutes of a blocked loop), and a body of invalid
    UTF-8 or deep nesting raised past the decoder ("sending failed unexpectedly", the
    batch failed with a traceback). Now read in linear time, or not read: retried."""
    caplog.set_level(logging.WARNING)
    await delivered_after(store, hostile)
    no_errors(caplog)


@pytest.mark.parametrize(
    "body",
    [b"[" * 3000 + b"]" * 3000, b'{"accepted":3,"coordinator_id":"\xff"}'],
    ids=["deep-nesting", "not-utf-8"],
)
async def test_an_answer_the_client_cannot_read_fails_the_batch_without_a_traceback(
    store: HostileStore, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A 202 that is not the store's answer is handed back as failed (a proxy's page,
    never taken as delivered), with its reason, not as an unexpected error."""
    store.script.append(answer(202, body))
    async with client(store, deadline=10) as c:
        await c.write(wire_bars(3))
        with contextlib.suppress(Exception):
            await c.flush(timeout=10)
    failures = c.take_failures()
    assert "unexpectedly" not in " ".join(str(f) for f in failures)
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_stream_event_the_client_cannot_read_is_counted_and_the_stream_goes_on(
    store: HostileStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = (
        b'{"coordinator_id":"s/bars","queue_size":1,"capacity":10,'
        b'"level":"soft","source":"store","ts":1.0}'
    )
    store.stream = (
        b"event: feedback\nid: 1\ndata: " + b"[" * 3000 + b"]" * 3000 + b"\n\n"
        b'event: feedback\nid: 2\ndata: {"level":"\xff"}\n\n'
        b"retry: " + BACKTRACKING[:60_000] + b"\n\n"
        b"event: feedback\nid: 3\ndata: " + good + b"\n\n"
    )
    events: list[Feedback] = []
    async with client(store, follow_feedback=True, on_feedback=events.append) as c:
        await until(lambda: events, timeout=10, what="the event after the unreadable ones")
        follower = c._follower
        assert follower is not None
        assert follower.bad_events == 2
        assert follower.connects == 1
    assert events[0].level == "soft"
    no_errors(caplog)
