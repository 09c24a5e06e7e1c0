"""GET /v1/feedback/stream and /v1/feedback/state over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent
from prometheus_client.parser import text_string_to_metric_families

from market_data_store.coordinator import BackpressureLevel, FeedbackBus, FeedbackEvent
from market_data_store.feedback import FeedbackFanout
from market_data_store.http.controllers import feedback as feedback_controller
from market_data_store.http.controllers.feedback import EVENT_ID_PATTERN
from tests.support.bars import bars_body
from tests.support.service import RunningService, ServiceFactory, service_factory
from tests.support.sse import Message, open_stream
from tests.support.waits import until

HARD, SOFT, OK = BackpressureLevel.hard, BackpressureLevel.soft, BackpressureLevel.ok
LOCAL = "test/bars"


@pytest.fixture
def service_with(database_url: str, tmp_path: Path) -> ServiceFactory:
    return service_factory(database_url, str(tmp_path))


@pytest.fixture
async def service(service_with: ServiceFactory) -> AsyncIterator[RunningService]:
    async with service_with() as svc:
        yield svc


def bus(svc: RunningService) -> FeedbackBus:
    b: FeedbackBus = svc.components.feedback_bus
    return b


def fanout(svc: RunningService) -> FeedbackFanout:
    f: FeedbackFanout = svc.components.feedback_fanout
    return f


async def emit(
    svc: RunningService, level: BackpressureLevel, cid: str = LOCAL, reason: str = "test"
) -> FeedbackEvent:
    event = FeedbackEvent.create(cid, 80, 100, level, reason)
    await bus(svc).publish(event)
    return event


def is_keepalive(message: Message) -> bool:
    """A keepalive comment, after the padding comment lines (dots) it may carry."""
    *padding, last = message.comments or [""]
    return (
        message.event is None
        and last == "keepalive"
        and all(line.strip(".") == "" for line in padding)
    )


def check(message: Message) -> CoreFeedbackEvent:
    """Every data line validates as Core's FeedbackEvent; the extras are there."""
    assert message.event == "feedback"
    assert message.id is not None
    data = message.json()
    assert {"reason", "utilization"} <= set(data)
    return CoreFeedbackEvent.model_validate_json(message.data)


async def test_retry_hint_then_snapshot_then_live_events(service: RunningService) -> None:
    async with open_stream(service.client) as stream:
        hint = await stream.next()
        assert hint.retry is not None
        assert hint.retry > 0
        assert hint.event is None
        first = await stream.next_event()
        snapshot = check(first)
        assert (snapshot.coordinator_id, snapshot.level) == (LOCAL, OK)
        assert first.json()["reason"] == "service_started"
        sent = [await emit(service, level) for level in (SOFT, HARD, OK)]
        live = await stream.events(3)
    assert [check(m).level for m in live] == [e.level for e in sent]
    assert [m.json()["ts"] for m in live] == [e.ts for e in sent]
    ids = [m.id or 0 for m in (first, *live)]
    assert ids == sorted(set(ids))  # strictly increasing


async def test_ingest_crossing_the_watermarks_reaches_the_stream(
    service_with: ServiceFactory,
) -> None:
    env = {
        "MDS_COORDINATOR_CAPACITY": "100",
        "MDS_COORDINATOR_HIGH_WATERMARK": "80",
        "MDS_COORDINATOR_LOW_WATERMARK": "50",
        "MDS_COORDINATOR_BATCH_SIZE": "50",
    }
    async with service_with(**env) as svc, open_stream(svc.client) as stream:
        await stream.next_event()  # snapshot
        response = await svc.client.post("/v1/bars?wait=commit", json=bars_body(90))
        assert response.status_code == 201
        events = [check(m) for m in await stream.events(3)]
    assert [(e.level, e.queue_size) for e in events][:2] == [(SOFT, 51), (HARD, 80)]
    assert events[2].level == OK
    assert events[2].queue_size <= 50
    assert all(e.coordinator_id == LOCAL and e.capacity == 100 for e in events)


async def test_resume_replays_exactly_what_was_missed(service: RunningService) -> None:
    async with open_stream(service.client) as stream:
        seen = [await stream.next_event()]
        await emit(service, SOFT)
        seen.append(await stream.next_event())
    last = seen[-1].id
    assert last is not None
    for how in ("header", "query"):
        missed = [await emit(service, level) for level in (HARD, OK)]
        headers = {"last-event-id": str(last)} if how == "header" else {}
        params = {"last_event_id": last} if how == "query" else {}
        async with open_stream(service.client, headers=headers, params=params) as stream:
            replayed = await stream.events(2)
            assert [check(m).ts for m in replayed] == [e.ts for e in missed]
            assert all(m.id is not None and m.id > last for m in replayed)
            live = await emit(service, SOFT)  # then live, no snapshot in between
            message = await stream.next_event()
            assert check(message).ts == live.ts
            assert message.id is not None
            last = message.id


async def test_an_id_older_than_the_history_gets_reset_then_the_snapshot(
    service_with: ServiceFactory,
) -> None:
    async with service_with(MDS_FEEDBACK_SSE_HISTORY="2") as svc:
        first = fanout(svc).last_id
        for level in (SOFT, HARD, OK):
            await emit(svc, level)
        await emit(svc, HARD, "test/other")
        async with open_stream(svc.client, headers={"last-event-id": str(first)}) as stream:
            reset = await stream.next_event()
            snapshot = await stream.events(2)
    assert reset.event == "reset"
    assert reset.id is not None
    assert [(check(m).coordinator_id, check(m).level) for m in snapshot] == [
        (LOCAL, OK), ("test/other", HARD),
    ]  # fmt: skip
    assert reset.id < (snapshot[0].id or 0)  # resuming from the reset replays the snapshot


async def test_filters_by_coordinator_and_level(service: RunningService) -> None:
    async with (
        open_stream(service.client, params={"coordinator_id": ["x/a", "x/b"]}) as by_id,
        open_stream(service.client, params={"min_level": "hard"}) as hard_only,
    ):
        for cid, level in (("x/a", SOFT), ("x/c", HARD), ("x/b", HARD), ("x/b", OK)):
            await emit(service, level, cid)
        assert [(check(m).coordinator_id, check(m).level) for m in await by_id.events(3)] == [
            ("x/a", SOFT), ("x/b", HARD), ("x/b", OK),
        ]  # fmt: skip
        assert [(check(m).coordinator_id, check(m).level) for m in await hard_only.events(3)] == [
            ("x/c", HARD), ("x/b", HARD), ("x/b", OK),  # ok ends x/b's hard: sent too
        ]  # fmt: skip


@pytest.mark.parametrize(
    ("params", "headers", "key"),
    [
        ({"min_level": "critical"}, {}, "min_level"),
        ({}, {"last-event-id": "abc"}, "last-event-id"),
        ({}, {"last-event-id": "null"}, "last-event-id"),
        ({}, {"last-event-id": ""}, "last-event-id"),
        ({"last_event_id": "-1"}, {}, "last_event_id"),
        ({"last_event_id": " 12"}, {}, "last_event_id"),
        ({"last_event_id": "1" * 21}, {}, "last_event_id"),
        # both given: the header is used, and the query is checked all the same
        ({"last_event_id": "abc"}, {"last-event-id": "12"}, "last_event_id"),
        ({"last_event_id": "12"}, {"last-event-id": "abc"}, "last-event-id"),
        ({"coordinator_id": "a\x01b"}, {}, "coordinator_id"),
    ],
)
async def test_bad_filters_are_a_400_problem(
    service: RunningService, params: dict[str, str], headers: dict[str, str], key: str
) -> None:
    response = await service.client.get("/v1/feedback/stream", params=params, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert key in {error["key"] for error in response.json()["errors"]}, response.text


async def test_keepalive_comments_within_the_heartbeat(service_with: ServiceFactory) -> None:
    async with (
        service_with(MDS_FEEDBACK_SSE_HEARTBEAT_SEC="0.2") as svc,
        open_stream(svc.client) as stream,
    ):
        await stream.next_event()
        for _ in range(2):
            keepalive = await stream.next(timeout=1.0)  # nothing else happens meanwhile
            assert is_keepalive(keepalive), keepalive


async def test_no_two_writes_of_an_idle_stream_are_further_apart_than_the_heartbeat(
    service_with: ServiceFactory,
) -> None:
    """The keepalive is due an interval after the stream's last write, event or
    comment: never up to two intervals (a fixed timer skipping a tick that saw data)."""
    interval, noise = 0.4, 0.25
    async with (
        service_with(MDS_FEEDBACK_SSE_HEARTBEAT_SEC=str(interval)) as svc,
        open_stream(svc.client) as stream,
    ):
        arrivals: list[tuple[float, Message]] = []
        keepalives = 0
        while len(arrivals) < 12:  # hint, snapshot, K, K, E, K, K, E, K, E, K, K
            message = await stream.next(timeout=2.0)
            arrivals.append((time.monotonic(), message))
            if is_keepalive(message):
                keepalives += 1
                if keepalives == 4:
                    await asyncio.sleep(interval / 2)  # an event in the middle of an interval
                if keepalives in (2, 4, 5):  # or right after a keepalive: the worst case
                    await emit(svc, (SOFT, HARD, OK)[(2, 4, 5).index(keepalives)])
    kinds = [
        "event" if m.event else "keepalive" if is_keepalive(m) else "hint" for _, m in arrivals
    ]
    assert kinds.count("event") >= 3  # the snapshot and the live ones
    assert kinds.count("keepalive") >= 6
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(arrivals)]
    assert max(gaps) < interval + noise, list(zip(kinds[1:], gaps, strict=True))
    # and not more often than needed: a keepalive comes an interval after the last write
    for kind, gap in zip(kinds[1:], gaps, strict=True):
        if kind == "keepalive":
            assert gap > interval - 0.15, list(zip(kinds[1:], gaps, strict=True))


async def test_a_filter_on_a_coordinator_no_one_reported_says_so_then_streams(
    service: RunningService,
) -> None:
    async with open_stream(service.client, params={"coordinator_id": "store-0/bars"}) as stream:
        assert (await stream.next()).retry is not None
        notice = await stream.next()
        assert notice.event is None
        assert notice.comments == [
            'no coordinator "store-0/bars" has reported yet; known: "test/bars"'
        ]
        sent = await emit(service, HARD, "store-0/bars")  # it appears later: streamed as usual
        message = await stream.next(timeout=5.0)
        assert check(message).coordinator_id == "store-0/bars"
        assert check(message).ts == sent.ts
    # a filter on known coordinators: no comment, the snapshot right after the hint
    async with open_stream(service.client, params={"coordinator_id": LOCAL}) as stream:
        assert (await stream.next()).retry is not None
        assert check(await stream.next()).coordinator_id == LOCAL


async def test_the_not_reported_comment_is_one_bounded_line(service: RunningService) -> None:
    ids = ['a"b\\c', *(f"x/{i:03d}" + "y" * 190 for i in range(99))]
    async with open_stream(service.client, params={"coordinator_id": ids}) as stream:
        await stream.next()
        raw = (await stream.next()).comments
    assert len(raw) == 1
    assert len(raw[0]) < 2_000
    assert raw[0].startswith(f'no coordinator {json.dumps(ids[0])} or "x/000yyy')
    assert raw[0].endswith(' and 90 more has reported yet; known: "test/bars"')
    assert raw[0].count("…") == 9


async def test_past_the_stream_cap_503_with_retry_after(service_with: ServiceFactory) -> None:
    async with (
        service_with(MDS_FEEDBACK_SSE_MAX_STREAMS="1") as svc,
        open_stream(svc.client) as stream,
    ):
        await stream.next_event()
        refused = await svc.client.get("/v1/feedback/stream")
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["reason"] == "limit"
        health = (await svc.client.get("/healthz")).json()
    (feedback,) = [c for c in health["components"] if c["name"] == "feedback"]
    assert feedback["details"]["subscribers"] == "1"


async def test_one_client_address_takes_at_most_max_streams_per_client(
    service_with: ServiceFactory,
) -> None:
    """Issue 18: 200 never-reading connections of one client took every stream slot.
    Loopback counts like any address; another address (here a forwarded one: uvicorn
    trusts X-Forwarded-For from 127.0.0.1 only) has slots of its own."""
    async with service_with(MDS_FEEDBACK_SSE_MAX_STREAMS_PER_CLIENT="3") as svc:
        async with contextlib.AsyncExitStack() as streams:
            held = [await streams.enter_async_context(open_stream(svc.client)) for _ in range(3)]
            refused = await svc.client.get("/v1/feedback/stream")
            assert refused.status_code == 503
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert int(refused.headers["retry-after"]) > 0
            problem = refused.json()
            assert (problem["status"], problem["reason"]) == (503, "client_limit")
            assert "3 feedback streams" in problem["detail"]
            forwarded = {"x-forwarded-for": "203.0.113.7"}
            async with open_stream(svc.client, headers=forwarded) as elsewhere:
                await elsewhere.next_event()
            for stream in held:
                await stream.next_event()  # they are served all along
            assert fanout(svc).streams_of("127.0.0.1") == 3
            # closing one frees its slot
            await streams.aclose()
        await until(lambda: fanout(svc).streams_of("127.0.0.1") == 0, what="slots freed")
        async with open_stream(svc.client) as again:
            await again.next_event()
        assert fanout(svc).stats.refused_per_client == 1
        text = (await svc.client.get("/metrics")).text
    dropped = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "mds_feedback_sse_dropped"
        for sample in family.samples
    }
    assert (dropped["client_limit"], dropped["limit"]) == (1, 0)


def never_reading(port: int) -> socket.socket:
    """A client that asks for the stream and never reads a byte (default buffers)."""
    sock = socket.socket()
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /v1/feedback/stream HTTP/1.1\r\nhost: x\r\n\r\n")
    return sock


async def test_a_reader_that_accepts_nothing_is_cut_within_the_stall_window(
    service_with: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: an idle stream's keepalives were 14 bytes, so a client that reads
    nothing had its socket buffers fill (and the send timeout fire) only after hours.
    Padded keepalives fill them within ``STALLED_READER_SEC`` (here 3 s instead of
    300); a client that reads stays, padding and all."""
    within = 3.0
    monkeypatch.setattr(feedback_controller, "STALLED_READER_SEC", within)
    env = {"MDS_FEEDBACK_SSE_HEARTBEAT_SEC": "0.1", "MDS_FEEDBACK_SSE_SEND_TIMEOUT": "0.5"}
    async with service_with(**env) as svc, open_stream(svc.client) as reading:
        await reading.next_event()
        connections = svc.server.server_state.connections
        port = int(svc.base_url.rsplit(":", 1)[1])
        stalled = never_reading(port)
        try:
            await until(lambda: fanout(svc).subscriber_count == 2, what="the stalled reader")
            started = time.monotonic()
            keepalives = 0
            while fanout(svc).subscriber_count > 1 and time.monotonic() - started < 2 * within:
                keepalives += is_keepalive(await reading.next(timeout=1.0))
            took = time.monotonic() - started
            await until(lambda: len(connections) == 1, what="its connection closed")
            stats = fanout(svc).stats
        finally:
            stalled.close()
    assert stats.dropped_send_timeout == 1, took
    assert took < within, took
    assert keepalives >= 3  # the reading stream went on meanwhile
    assert fanout(svc).subscriber_count == 0  # (the reading one ended with the service)


async def test_state_is_the_snapshot_as_json(service: RunningService) -> None:
    await emit(service, HARD, "test/other")
    response = await service.client.get("/v1/feedback/state")
    assert response.status_code == 200
    coordinators = response.json()["coordinators"]
    events = [CoreFeedbackEvent.model_validate(c) for c in coordinators]
    assert [(e.coordinator_id, e.level) for e in events] == [(LOCAL, OK), ("test/other", HARD)]
    assert coordinators[1]["utilization"] == 0.8


def stalled_reader(port: int) -> socket.socket:
    """A client that asks for the stream and never reads a byte (tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /v1/feedback/stream HTTP/1.1\r\nhost: x\r\n\r\n")
    return sock


async def test_a_stalled_reader_delays_no_one_stays_bounded_and_is_cut(
    service_with: ServiceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"MDS_FEEDBACK_SSE_SUBSCRIBER_QUEUE": "8", "MDS_FEEDBACK_SSE_SEND_TIMEOUT": "0.5"}
    async with service_with(**env) as svc, open_stream(svc.client) as fast:
        await fast.next_event()
        connections = svc.server.server_state.connections
        held = len(connections)
        port = int(svc.base_url.rsplit(":", 1)[1])
        before = set(fanout(svc)._subscribers)
        stalled = stalled_reader(port)
        try:
            await until(lambda: fanout(svc).subscriber_count >= 2, what="the stalled reader")
            (slow,) = set(fanout(svc)._subscribers) - before
            most_pending = 0
            # ~1 MB in all: far more than a stream's socket and write buffers hold
            n = 1000
            coordinators = [f"x/{i}" for i in range(4)]
            reader = asyncio.create_task(fast.events(n, timeout=30))  # reads as events come
            for i in range(n):
                level = (SOFT, HARD)[i % 2]
                await emit(svc, level, coordinators[i % len(coordinators)], "r" * 1000)
                most_pending = max([most_pending, *(s.pending for s in fanout(svc)._subscribers)])
                await asyncio.sleep(0)  # the streams run between events, as they would
            received = await reader
            async with asyncio.timeout(10):
                await until(lambda: fanout(svc).subscriber_count <= 1, what="the stalled cut")
                # the server holds nothing for it: its connection was cut, not left to
                # drain a buffer its client never reads
                await until(lambda: len(connections) <= held, what="its connection closed")
            stats = fanout(svc).stats
        finally:
            stalled.close()
    assert [check(m).coordinator_id for m in received] == [
        coordinators[i % len(coordinators)] for i in range(n)
    ]  # the fast reader got every event, in order
    assert slow.closed
    assert slow.close_reason in ("slow", "send_timeout")
    assert stats.dropped_slow + stats.dropped_send_timeout == 1
    assert most_pending <= 8  # never more than subscriber_queue buffered for anyone
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_shutdown_does_not_wait_on_a_stalled_reader(service_with: ServiceFactory) -> None:
    """A stream blocked on a client that reads nothing ends (and its connection is cut)
    within a short grace at shutdown, not after the whole send timeout."""
    async with service_with(MDS_FEEDBACK_SSE_SEND_TIMEOUT="60") as svc:
        connections = svc.server.server_state.connections
        port = int(svc.base_url.rsplit(":", 1)[1])
        stalled = stalled_reader(port)
        try:
            await until(lambda: fanout(svc).subscriber_count >= 1, what="the stalled reader")
            for i in range(300):  # ~1 MB: its buffers fill, a send blocks
                await emit(svc, (SOFT, HARD)[i % 2], LOCAL, "r" * 3000)
                await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            started = time.monotonic()
            svc.components.lifecycle.begin_shutdown()
            async with asyncio.timeout(5):
                await until(
                    lambda: not (fanout(svc).subscriber_count or connections),
                    what="every stream ended and its connection cut",
                )
            took = time.monotonic() - started
        finally:
            stalled.close()
    assert took < 3  # the grace (0.5 s), far from the 60 s send timeout


async def test_openapi_documents_the_stream(service: RunningService) -> None:
    schema = (await service.client.get("/schema/openapi.json")).json()
    route = schema["paths"]["/v1/feedback/stream"]["get"]
    assert set(route["responses"]["200"]["content"]) == {"text/event-stream"}
    for status in ("400", "503"):
        assert set(route["responses"][status]["content"]) == {"application/problem+json"}
    params = {(p["name"], p["in"]) for p in route["parameters"]}
    for param in route["parameters"]:
        if param["name"] in ("last-event-id", "last_event_id"):
            # a string of the very pattern the stream checks, never null
            assert param["schema"]["type"] == "string", param
            assert param["schema"]["pattern"] == EVENT_ID_PATTERN, param
            assert "oneOf" not in param["schema"], param
    assert {
        ("coordinator_id", "query"), ("min_level", "query"), ("last_event_id", "query"),
        ("last-event-id", "header"),
    } <= params  # fmt: skip
    state = schema["paths"]["/v1/feedback/state"]["get"]["responses"]["200"]
    assert set(state["content"]) == {"application/json"}


async def test_sse_disabled_removes_the_stream_and_the_page(service_with: ServiceFactory) -> None:
    async with service_with(MDS_FEEDBACK_SSE_ENABLED="false") as svc:
        assert (await svc.client.get("/v1/feedback/stream")).status_code == 404
        assert (await svc.client.get("/")).status_code == 404
        assert (await svc.client.get("/v1/feedback/state")).status_code == 200


async def test_feedback_metrics_are_scraped(service: RunningService) -> None:
    async with open_stream(service.client) as stream:
        await stream.next_event()
        await emit(service, HARD)
        await stream.next_event()
        text = (await service.client.get("/metrics")).text
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}

    def value(name: str, **labels: str) -> float:
        (sample,) = [s for s in families[name] if labels.items() <= s.labels.items()]
        return sample.value

    assert value("mds_feedback_events_published", origin="local") == 2  # start + hard
    assert value("mds_feedback_events_published", origin="remote") == 0
    assert value("mds_feedback_sse_delivered") == 2
    assert value("mds_feedback_sse_subscribers") == 1
    assert value("mds_feedback_sse_dropped", reason="slow") == 0
