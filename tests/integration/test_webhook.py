"""The feedback webhook against a real HTTP endpoint: the broadcaster alone, then the service.

``HttpReceiver`` is a real HTTP/1.1 server on 127.0.0.1; it answers as scripted
(status, delay, hang) and records every request with its arrival time.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent
from market_data_core.telemetry import HealthStatus

from market_data_store.coordinator import BackpressureLevel, FeedbackBus, FeedbackEvent
from market_data_store.feedback import HttpFeedbackBroadcaster
from tests.support.bars import bars_body
from tests.support.feedback import Recorder
from tests.support.http_receiver import HttpReceiver, Reply
from tests.support.service import RunningService, running_service, service_settings
from tests.support.waits import until

Make = Callable[..., HttpFeedbackBroadcaster]


def event(
    queue_size: int = 8000,
    capacity: int = 10_000,
    level: BackpressureLevel = BackpressureLevel.hard,
    reason: str | None = "high_watermark",
    coordinator_id: str = "test-coord",
) -> FeedbackEvent:
    return FeedbackEvent.create(coordinator_id, queue_size, capacity, level, reason)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def receiver() -> AsyncIterator[HttpReceiver]:
    async with HttpReceiver() as r:
        yield r


@pytest.fixture
async def make(receiver: HttpReceiver, bus: FeedbackBus) -> AsyncIterator[Make]:
    """Builds broadcasters to ``receiver`` on ``bus`` (fast: small timeout and backoff);
    stops them all at the end."""
    made: list[HttpFeedbackBroadcaster] = []

    def factory(endpoint: str | None = None, **kwargs: Any) -> HttpFeedbackBroadcaster:
        options: dict[str, Any] = {"timeout": 1.0, "backoff_base": 0.01, "bus": bus, **kwargs}
        broadcaster = HttpFeedbackBroadcaster(endpoint or receiver.url(), **options)
        made.append(broadcaster)
        return broadcaster

    yield factory
    for broadcaster in made:
        await broadcaster.stop()


# -- the reference library's expectations ----------------------------------------------------


async def test_start_and_stop(make: Make) -> None:
    broadcaster = make()
    assert not broadcaster.started
    await broadcaster.start()
    assert broadcaster.started
    client = broadcaster._client
    assert client is not None
    assert not client.is_closed
    await broadcaster.stop()
    assert not broadcaster.started
    assert client.is_closed
    assert broadcaster._client is None
    await broadcaster.stop()  # idempotent


async def test_disabled_start_does_nothing(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    before = bus.subscriber_count
    broadcaster = make(enabled=False)
    await broadcaster.start()
    assert not broadcaster.started
    assert broadcaster._client is None
    assert bus.subscriber_count == before
    await bus.publish(event())
    assert await broadcaster.broadcast_one(event()) is False
    await asyncio.sleep(0.05)
    assert receiver.requests == []
    await broadcaster.stop()


async def test_http_500_is_retried_until_success(make: Make, receiver: HttpReceiver) -> None:
    receiver.script(500, 500, 200)
    broadcaster = make(max_retries=3)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is True
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1  # the same body every time
    assert broadcaster.stats.retried == 2
    assert not broadcaster.failing
    assert broadcaster.last_error is None


async def test_exhausted_retries_give_up(make: Make, receiver: HttpReceiver) -> None:
    receiver.default = Reply(500)
    broadcaster = make(max_retries=3)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is False
    assert len(receiver.requests) == 3  # max_retries attempts in all, no more
    assert broadcaster.stats.retried == 2
    assert broadcaster.failing
    assert broadcaster.last_error == "HTTP 500"
    await asyncio.sleep(0.05)
    assert len(receiver.requests) == 3


async def test_exhausted_retries_count_as_failed(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    receiver.default = Reply(500)
    broadcaster = make(max_retries=2)
    await broadcaster.start()
    await bus.publish(event())
    await until(lambda: broadcaster.stats.failed == 1)
    assert len(receiver.requests) == 2
    assert (broadcaster.stats.sent, broadcaster.stats.retried) == (0, 1)
    assert broadcaster.failing


async def test_payload_format(make: Make, receiver: HttpReceiver) -> None:
    broadcaster = make()
    await broadcaster.start()
    sent = event(8000, 10_000, BackpressureLevel.hard, "high_watermark", "bars-coord")
    assert await broadcaster.broadcast_one(sent) is True
    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(request.body))
    body = request.json()
    assert body["coordinator_id"] == "bars-coord"
    assert body["queue_size"] == 8000
    assert body["capacity"] == 10_000
    assert body["level"] == "hard"
    assert body["reason"] == "high_watermark"
    assert body["utilization"] == 0.8
    assert body["source"] == "store"
    assert body["ts"] == sent.ts
    assert b"\n" not in request.body


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
async def test_broadcast_one_true_on_2xx(make: Make, receiver: HttpReceiver, status: int) -> None:
    receiver.default = Reply(status)
    broadcaster = make(max_retries=3)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is True
    assert len(receiver.requests) == 1
    assert broadcaster.stats.retried == 0


@pytest.mark.parametrize(
    ("status", "attempts"),
    [(301, 2), (408, 2), (429, 2), (503, 2), (400, 1), (404, 1), (422, 1)],
)
async def test_broadcast_one_false_on_other_statuses(
    make: Make, receiver: HttpReceiver, status: int, attempts: int
) -> None:
    receiver.default = Reply(status)
    broadcaster = make(max_retries=2)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is False
    # redirects are not followed; a refusal (4xx but 408/425/429) is not sent again
    assert len(receiver.requests) == attempts
    assert broadcaster.last_error == f"HTTP {status}"


async def test_broadcast_one_before_start_is_false(make: Make, receiver: HttpReceiver) -> None:
    assert await make().broadcast_one(event()) is False
    assert receiver.requests == []


async def test_publishing_on_the_bus_posts_once(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver, recorder: Recorder
) -> None:
    broadcaster = make()
    await broadcaster.start()
    sent = event()
    await bus.publish(sent)
    (request,) = await receiver.wait_for(1)
    assert request.json()["ts"] == sent.ts
    await until(lambda: broadcaster.stats.sent == 1)
    assert recorder.events == [sent]  # the other subscriber got it too
    await asyncio.sleep(0.05)
    assert len(receiver.requests) == 1
    assert broadcaster.buffered == 0


async def test_unsubscribes_on_stop(make: Make, bus: FeedbackBus, receiver: HttpReceiver) -> None:
    initial = bus.subscriber_count
    broadcaster = make()
    await broadcaster.start()
    assert bus.subscriber_count == initial + 1
    await broadcaster.start()  # no second subscription
    assert bus.subscriber_count == initial + 1
    await broadcaster.stop()
    assert bus.subscriber_count == initial
    await bus.publish(event())
    await asyncio.sleep(0.05)
    assert receiver.requests == []


async def test_default_bus_when_none_given(fresh_bus: FeedbackBus, receiver: HttpReceiver) -> None:
    broadcaster = HttpFeedbackBroadcaster(receiver.url(), timeout=1.0, backoff_base=0.01)
    await broadcaster.start()
    try:
        assert fresh_bus.subscriber_count == 1
        await fresh_bus.publish(event())
        await receiver.wait_for(1)
    finally:
        await broadcaster.stop()
    assert fresh_bus.subscriber_count == 0


async def test_restart_after_stop(make: Make, bus: FeedbackBus, receiver: HttpReceiver) -> None:
    broadcaster = make()
    await broadcaster.start()
    await broadcaster.stop()
    await broadcaster.start()
    await bus.publish(event())
    await receiver.wait_for(1)
    await until(lambda: broadcaster.stats.sent == 1)


def test_max_retries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        HttpFeedbackBroadcaster("http://127.0.0.1:1/hook", max_retries=0)


async def test_max_attempts_is_max_retries_by_our_name(make: Make, receiver: HttpReceiver) -> None:
    receiver.default = Reply(500)
    broadcaster = make(max_attempts=2)
    assert broadcaster.max_attempts == broadcaster.max_retries == 2
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is False
    assert len(receiver.requests) == 2  # attempts in all, as max_retries counts them
    assert broadcaster.stats.retried == 1
    assert HttpFeedbackBroadcaster("http://127.0.0.1:1/hook").max_attempts == 3
    assert HttpFeedbackBroadcaster("http://127.0.0.1:1/hook", max_retries=4).max_attempts == 4
    broadcaster.max_retries = 5  # settable, as the original library's attribute was
    assert broadcaster.max_attempts == 5


def test_max_attempts_and_max_retries_are_not_both_given() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        HttpFeedbackBroadcaster("http://127.0.0.1:1/hook", max_attempts=0)
    with pytest.raises(TypeError, match="not both"):
        HttpFeedbackBroadcaster("http://127.0.0.1:1/hook", max_attempts=2, max_retries=2)


def test_compat_import_path() -> None:
    from market_data_store.coordinator.http_broadcast import (
        HttpFeedbackBroadcaster as Compat,
    )

    assert Compat is HttpFeedbackBroadcaster
    from market_data_store.coordinator import HttpFeedbackBroadcaster as AsInTheLibrary

    assert AsInTheLibrary is HttpFeedbackBroadcaster


def test_importing_coordinator_does_not_import_feedback() -> None:
    code = (
        "import market_data_store.coordinator, sys; "
        "assert 'market_data_store.feedback' not in sys.modules; "
        "assert 'httpx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- what a service needs ----------------------------------------------------------------------


async def test_every_body_validates_as_core_feedback_event(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    broadcaster = make()
    await broadcaster.start()
    sent = [
        event(0, 100, BackpressureLevel.ok, "service_started", "test/bars"),
        event(51, 100, BackpressureLevel.soft, None),
        event(80, 100, BackpressureLevel.hard, "high_watermark"),
        event(50, 100, BackpressureLevel.ok, "queue_recovered"),
        event(1, 3, BackpressureLevel.soft, "é ünïcode ✓"),
    ]
    for e in sent:
        await bus.publish(e)
    requests = await receiver.wait_for(len(sent))
    for request, e in zip(requests, sent, strict=True):  # in publication order
        core = CoreFeedbackEvent.model_validate_json(request.body)
        assert core.coordinator_id == e.coordinator_id
        assert (core.queue_size, core.capacity) == (e.queue_size, e.capacity)
        assert core.level.value == e.level.value
        assert core.source == "store"
        assert core.ts == e.ts
        assert request.json()["reason"] == e.reason
        assert request.json()["utilization"] == round(e.utilization, 4)
        assert FeedbackEvent.model_validate_json(request.body) == e  # round trip


async def test_hung_endpoint_never_blocks_the_bus(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    receiver.hang()
    broadcaster = make(timeout=0.5, queue_size=1000)
    await broadcaster.start()
    await bus.publish(event())
    await receiver.wait_for(1)  # the first delivery is now stuck in the endpoint
    started = time.monotonic()
    for i in range(100):
        await bus.publish(event(queue_size=i))
    assert time.monotonic() - started < 1.0
    assert broadcaster.buffered == 100
    assert broadcaster.stats.discarded == 0


async def test_outbox_is_bounded(make: Make, bus: FeedbackBus, receiver: HttpReceiver) -> None:
    receiver.hang()
    broadcaster = make(timeout=0.5, queue_size=3)
    await broadcaster.start()
    await bus.publish(event(queue_size=0))
    await receiver.wait_for(1)
    for i in range(1, 11):
        await bus.publish(event(queue_size=i))
    assert broadcaster.buffered == 3
    assert broadcaster.stats.discarded == 7  # the oldest ones


async def test_full_outbox_keeps_the_newest(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    receiver.script(Reply(delay=0.2))  # the first delivery is slow, the rest immediate
    broadcaster = make(queue_size=2)
    await broadcaster.start()
    await bus.publish(event(queue_size=0))
    await receiver.wait_for(1)
    for i in range(1, 6):
        await bus.publish(event(queue_size=i))
    await until(lambda: broadcaster.stats.sent == 3)
    assert [b["queue_size"] for b in receiver.bodies()] == [0, 4, 5]
    assert broadcaster.stats.discarded == 3


async def test_stop_returns_within_its_timeout_while_the_endpoint_hangs(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    receiver.hang()
    broadcaster = make(timeout=0.5, max_retries=5)
    await broadcaster.start()
    client = broadcaster._client
    assert client is not None
    for i in range(5):
        await bus.publish(event(queue_size=i))
    await receiver.wait_for(1)
    started = time.monotonic()
    await broadcaster.stop()
    assert time.monotonic() - started < broadcaster.timeout + 1.0
    assert not broadcaster.started
    assert client.is_closed
    assert broadcaster.buffered == 0
    assert broadcaster.stats.sent == 0
    assert broadcaster.stats.discarded >= 4  # the buffered ones (not the one in flight)


async def test_every_event_is_accounted_for_after_stop(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    receiver.hang()
    broadcaster = make(timeout=0.3)
    await broadcaster.start()
    for i in range(5):
        await bus.publish(event(queue_size=i))
    await receiver.wait_for(1)
    await broadcaster.stop()
    s = broadcaster.stats
    assert s.sent + s.failed + s.discarded == 5


async def test_stop_delivers_what_is_buffered(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    broadcaster = make(timeout=2.0)
    await broadcaster.start()
    for i in range(20):
        await bus.publish(event(queue_size=i))
    await broadcaster.stop()
    assert broadcaster.stats.sent == 20
    assert [b["queue_size"] for b in receiver.bodies()] == list(range(20))


async def test_unreachable_endpoint_fails_after_max_retries(make: Make, bus: FeedbackBus) -> None:
    broadcaster = make(f"http://127.0.0.1:{closed_port()}/hook", max_retries=3)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is False
    assert broadcaster.stats.retried == 2
    assert broadcaster.last_error == "ConnectError"
    await bus.publish(event())
    await until(lambda: broadcaster.stats.failed == 1)
    assert broadcaster.stats.retried == 4
    assert broadcaster.failing


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:99999/hook",  # port out of range: not an httpx.HTTPError
        "http://[::1/hook",  # httpx.InvalidURL
    ],
)
async def test_malformed_endpoint_counts_as_failing(
    make: Make, bus: FeedbackBus, endpoint: str
) -> None:
    broadcaster = make(endpoint, max_retries=2)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is False
    assert broadcaster.failing
    assert broadcaster.stats.retried == 1
    await bus.publish(event())
    await until(lambda: broadcaster.stats.failed == 1)


async def test_slow_answer_is_an_attempt_timeout_then_retried(
    make: Make, receiver: HttpReceiver
) -> None:
    receiver.script(Reply(200, delay=2.0))  # longer than the whole-attempt timeout
    broadcaster = make(timeout=0.2, max_retries=2)
    await broadcaster.start()
    started = time.monotonic()
    assert await broadcaster.broadcast_one(event()) is True
    assert time.monotonic() - started < 1.5
    assert len(receiver.requests) == 2
    assert broadcaster.stats.retried == 1


async def test_hung_endpoint_times_out_every_attempt(make: Make, receiver: HttpReceiver) -> None:
    receiver.hang()
    broadcaster = make(timeout=0.1, max_retries=2)
    await broadcaster.start()
    started = time.monotonic()
    assert await broadcaster.broadcast_one(event()) is False
    assert time.monotonic() - started < 2.0
    assert len(receiver.requests) == 2
    assert broadcaster.last_error == "TimeoutError"


async def test_backoff_between_attempts_grows(make: Make, receiver: HttpReceiver) -> None:
    base = 0.04
    receiver.default = Reply(500)
    broadcaster = make(max_retries=4, backoff_base=base)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is False
    arrivals = [r.arrived for r in receiver.requests]
    assert len(arrivals) == 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    slack = 0.002  # clock granularity
    for n, gap in enumerate(gaps, start=1):
        # after the n-th failure: backoff_base * 2**(n-1), jittered to 50-100 %
        assert gap >= base * 2 ** (n - 1) * 0.5 - slack, gaps
    assert gaps[1] >= base * 2 * 0.5 - slack  # before the 3rd attempt: at least backoff_base
    assert gaps[2] >= base * 4 * 0.5 - slack


async def test_failing_clears_after_a_success(make: Make, receiver: HttpReceiver) -> None:
    receiver.script(500)
    broadcaster = make(max_retries=1)
    await broadcaster.start()
    assert await broadcaster.broadcast_one(event()) is False
    assert broadcaster.failing
    assert await broadcaster.broadcast_one(event()) is True
    assert not broadcaster.failing
    assert broadcaster.last_success is not None


async def test_keep_alive_reuses_one_connection(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    broadcaster = make()
    await broadcaster.start()
    for i in range(3):
        await bus.publish(event(queue_size=i))
    requests = await receiver.wait_for(3)
    assert {r.connection for r in requests} == {1}


async def test_endpoint_closing_each_connection(
    make: Make, bus: FeedbackBus, receiver: HttpReceiver
) -> None:
    receiver.default = Reply(200, close=True)
    broadcaster = make(max_retries=1)
    await broadcaster.start()
    for i in range(3):
        await bus.publish(event(queue_size=i))
    await until(lambda: broadcaster.stats.sent == 3)
    assert [r.connection for r in receiver.requests] == [1, 2, 3]
    assert broadcaster.stats.failed == 0


async def test_endpoint_dropping_the_connection_is_retried(
    make: Make, receiver: HttpReceiver
) -> None:
    receiver.script(Reply(hang=True))
    broadcaster = make(timeout=1.0, max_retries=2)
    await broadcaster.start()
    delivery = asyncio.create_task(broadcaster.broadcast_one(event()))
    await receiver.wait_for(1)
    receiver.drop_connections()  # the endpoint resets the connection mid-request
    assert await asyncio.wait_for(delivery, 5) is True
    assert len(receiver.requests) == 2
    assert broadcaster.stats.retried == 1


# -- the service --------------------------------------------------------------------------------


@asynccontextmanager
async def webhook_service(
    database_url: str, tmp_path: Path, receiver: HttpReceiver, **env: str
) -> AsyncIterator[RunningService]:
    webhook = {
        "MDS_FEEDBACK_WEBHOOK_URL": receiver.url("/hook"),
        "MDS_FEEDBACK_WEBHOOK_TIMEOUT": "1",
    }
    settings = service_settings(database_url, str(tmp_path), **{**webhook, **env})
    async with running_service(settings) as svc:
        yield svc


async def feedback_health(client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    response = await client.get("/healthz")
    assert response.status_code == 200
    status = HealthStatus.model_validate_json(response.content)
    (component,) = [c for c in status.components if c.name == "feedback"]
    return component.state, component.details


async def test_service_posts_service_started(
    database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    async with webhook_service(database_url, tmp_path, receiver) as service:
        (request,) = await receiver.wait_for(1)
        assert request.path == "/hook"
        first = CoreFeedbackEvent.model_validate_json(request.body)
        assert first.coordinator_id == "test/bars"
        assert first.level.value == "ok"
        assert first.source == "store"
        assert request.json()["reason"] == "service_started"
        assert request.json()["utilization"] == 0.0

        webhook = service.components.feedback_channels.webhook
        assert webhook is not None
        await until(lambda: webhook.stats.sent == 1)
        state, details = await feedback_health(service.client)
        assert (state, details["webhook"]) == ("healthy", "ok")

        bus: FeedbackBus = service.components.feedback_bus
        await bus.publish(event(9, 10, BackpressureLevel.hard, "from_test", "test/other"))
        _, second = await receiver.wait_for(2)
        assert second.json()["coordinator_id"] == "test/other"
        assert second.json()["reason"] == "from_test"
        CoreFeedbackEvent.model_validate_json(second.body)


async def test_service_posts_level_changes_from_ingest(
    database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    env = {"MDS_COORDINATOR_CAPACITY": "20", "MDS_COORDINATOR_BATCH_SIZE": "10"}
    async with webhook_service(database_url, tmp_path, receiver, **env) as service:
        response = await service.client.post("/v1/bars", json=bars_body(20))
        assert response.status_code == 202, response.text
        await until(lambda: len(receiver.requests) >= 4)
        bodies = receiver.bodies()
        for request in receiver.requests:
            CoreFeedbackEvent.model_validate_json(request.body)
        assert [(b["level"], b["reason"]) for b in bodies[:4]] == [
            ("ok", "service_started"),
            ("soft", None),
            ("hard", None),
            ("ok", "queue_recovered"),
        ]
        assert {b["coordinator_id"] for b in bodies} == {"test/bars"}
        assert {b["capacity"] for b in bodies} == {20}
        assert bodies[2]["queue_size"] == 16  # the high watermark, 80 % of 20
        assert bodies[2]["utilization"] == 0.8


async def test_health_reports_a_failing_webhook(
    database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.default = Reply(500)
    env = {"MDS_FEEDBACK_WEBHOOK_MAX_ATTEMPTS": "1"}
    async with webhook_service(database_url, tmp_path, receiver, **env) as service:
        await receiver.wait_for(1)  # service_started, answered 500, given up
        webhook = service.components.feedback_channels.webhook
        assert webhook is not None
        await until(lambda: webhook.stats.failed == 1)
        assert len(receiver.requests) == 1  # one attempt in all
        state, details = await feedback_health(service.client)
        assert (state, details["webhook"]) == ("degraded", "failing")

        receiver.default = Reply(200)  # the endpoint recovers: the next event clears it
        await service.components.feedback_bus.publish(event())
        await until(lambda: webhook.stats.sent == 1)
        state, details = await feedback_health(service.client)
        assert (state, details["webhook"]) == ("healthy", "ok")


async def test_service_stops_promptly_while_the_webhook_hangs(
    database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.hang()
    env = {"MDS_FEEDBACK_WEBHOOK_TIMEOUT": "0.5"}
    async with webhook_service(database_url, tmp_path, receiver, **env) as service:
        await receiver.wait_for(1)
        for i in range(50):
            await service.components.feedback_bus.publish(event(queue_size=i))
        state, _ = await feedback_health(service.client)  # the service still answers
        assert state == "healthy"
        started = time.monotonic()
    assert time.monotonic() - started < 5.0


async def test_a_huge_response_body_is_never_read(bus: FeedbackBus) -> None:
    """Only the status matters: an endpoint answering 100 GB costs nothing."""
    sent = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000000\r\n\r\n")
        chunk = b"x" * 65536
        try:
            while sent < 1_000_000_000:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    broadcaster = HttpFeedbackBroadcaster(
        f"http://127.0.0.1:{port}/hook", timeout=5, max_retries=1, bus=bus
    )
    await broadcaster.start()
    try:
        async with asyncio.timeout(5):
            assert await broadcaster.broadcast_one(event()) is True
    finally:
        await broadcaster.stop()
        server.close()
        await server.wait_closed()
    assert sent < 50_000_000  # the client hung up instead of reading
