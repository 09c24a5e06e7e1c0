"""StoreClient against a scripted store (httpx.MockTransport): every path of an answer."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

import httpx
import msgspec
import pytest

from market_data_store.client import (
    BarsDeadLetteredError,
    BarsRejectedError,
    ClientClosedError,
    ClientOptions,
    DeadlineExceededError,
    Feedback,
    InvalidBarError,
    StoreClient,
)
from market_data_store.client.credit import INITIAL_PART
from tests.support.bars import wire_bar, wire_bars
from tests.support.waits import until

Answer = Callable[[httpx.Request, dict[str, Any]], Awaitable[httpx.Response] | httpx.Response]


def accepted(count: int, level: str = "ok", status: int = 202, **extra: Any) -> httpx.Response:
    body = {"accepted": count, "level": level, "queue_size": 0, "capacity": 100,
            "coordinator_id": "s/bars", **extra}  # fmt: skip
    return httpx.Response(status, json=body)


class Store:
    """Decodes each request's MessagePack body and answers with ``answer`` (default 202)."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.msgpack.decode(request.content)
        self.requests.append(request)
        self.bodies.append(body)
        self.times.append(time.monotonic())
        if self.answer is None:
            return accepted(len(body["bars"]))
        response = self.answer(request, body)
        return await response if inspect.isawaitable(response) else response

    def sizes(self) -> list[int]:
        return [len(b["bars"]) for b in self.bodies]


def client(store: Store, **options: Any) -> StoreClient:
    """Queued mode unless asked (these scripts answer 202); the default, durable mode
    and the credit have tests of their own below."""
    options.setdefault("wait_commit", False)
    options.setdefault("follow_feedback", False)
    options.setdefault("initial_backoff", 0.01)
    options.setdefault("max_backoff", 0.02)
    return StoreClient(
        "http://store", provider="p", transport=httpx.MockTransport(store), **options
    )


async def test_full_batches_go_at_once_the_rest_at_flush() -> None:
    store = Store()
    async with client(store, batch_size=4, linger=60) as c:
        await c.write(wire_bars(10))
        await until(lambda: len(store.bodies) >= 2, timeout=1, what="two full batches sent")
        assert store.sizes() == [4, 4]
        await c.flush(timeout=5)
        assert sorted(store.sizes()) == [2, 4, 4]
        assert c.buffered == 0
    request = store.requests[0]
    assert request.headers["content-type"] == "application/msgpack"
    assert request.url.path == "/v1/bars"
    stats = c.stats
    assert (stats.bars_written, stats.bars_sent, stats.bars_accepted) == (10, 10, 10)
    assert (stats.batches_sent, stats.requests, stats.retries) == (3, 3, 0)
    assert c.coordinators == {"s/bars"}


async def test_linger_sends_a_partial_batch_without_flush() -> None:
    store = Store()
    async with client(store, batch_size=100, linger=0.05) as c:
        await c.write(wire_bars(3))
        await until(lambda: store.bodies, timeout=2, what="the partial batch sent")
        assert store.sizes() == [3]


async def test_wait_commit_counts_committed_and_dead_lettered() -> None:
    store = Store(lambda r, b: accepted(3, status=201, committed=2, dead_lettered=1))
    with pytest.raises(BarsDeadLetteredError):  # which one, the store did not say
        async with client(store, wait_commit=True) as c:
            await c.write(wire_bars(3))
    assert store.requests[0].url.params["wait"] == "commit"
    assert (c.stats.bars_committed, c.stats.bars_dead_lettered) == (2, 1)


async def test_413_splits_the_batch_and_a_single_bar_too_large_is_rejected() -> None:
    def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        big = any(b["symbol"] == "HUGE" for b in body["bars"])
        if len(body["bars"]) > 2 or big:
            return httpx.Response(413, json={"status": 413, "detail": "too many bars"})
        return accepted(len(body["bars"]))

    store = Store(answer)
    c = client(store, batch_size=8)
    await c.write(wire_bars(8))
    await c.flush(timeout=5)
    assert store.sizes() == [8, 4, 2, 2, 4, 2, 2]
    assert c.stats.splits == 3
    assert c.stats.bars_accepted == 8
    await c.write([wire_bar(100), wire_bar(101, symbol="HUGE")])
    with pytest.raises(BarsRejectedError) as info:
        await c.flush(timeout=5)
    await c.aclose()
    assert info.value.status == 413
    assert [b["symbol"] for b in info.value.bars] == ["HUGE"]
    assert c.stats.bars_accepted == 9


async def test_4xx_raises_with_the_problem_and_is_never_retried() -> None:
    errors = [{"index": 1, "field": "low", "message": "must be <= min(open, close)"}]
    problem = {"status": 422, "detail": "1 invalid field(s); nothing was stored", "errors": errors}
    store = Store(lambda r, b: httpx.Response(422, json=problem))
    c = client(store)
    await c.write(wire_bars(2))
    with pytest.raises(BarsRejectedError) as info:
        await c.flush(timeout=5)
    error = info.value
    assert (error.status, error.problem, len(error.bars)) == (422, problem, 2)
    assert error.errors == problem["errors"]
    assert "bar 1: low: must be <= min(open, close)" in str(error)
    assert store.sizes() == [2]  # one request, no retry
    assert (c.stats.batches_failed, c.stats.bars_failed) == (1, 2)
    await c.aclose()


async def test_failures_are_raised_oldest_first_then_handed_over() -> None:
    def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if body["bars"][0]["symbol"].startswith("BAD"):
            return httpx.Response(400, text="not a problem document")
        return accepted(len(body["bars"]))

    store = Store(answer)
    c = client(store, batch_size=1, max_in_flight=1)
    await c.write(
        [
            wire_bar(0, symbol="BAD1"),
            wire_bar(1, symbol="BAD2"),
            wire_bar(2, symbol="BAD3"),
            wire_bar(3),
        ]
    )
    with pytest.raises(BarsRejectedError, match="not a problem document") as first:
        await c.flush(timeout=5)
    assert first.value.bars[0]["symbol"] == "BAD1"
    with pytest.raises(BarsRejectedError) as second:
        await c.write(wire_bars(1, 4))  # raised before anything of the call is buffered
    assert second.value.bars[0]["symbol"] == "BAD2"
    assert [e.bars[0]["symbol"] for e in c.take_failures()] == ["BAD3"]
    await c.flush(timeout=5)
    await c.aclose()
    assert c.stats.bars_written == 4


async def test_5xx_408_and_transport_errors_are_retried() -> None:
    script: list[Any] = [500, 408, httpx.ConnectError("refused"), 502]

    def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if script:
            step = script.pop(0)
            if isinstance(step, Exception):
                raise step
            return httpx.Response(step, text="later")
        return accepted(len(body["bars"]))

    store = Store(answer)
    async with client(store) as c:
        await c.write(wire_bars(5))
    stats = c.stats
    assert (stats.requests, stats.retries, stats.transport_errors) == (5, 4, 1)
    assert stats.bars_accepted == 5


async def test_503_is_retried_after_retry_after_and_names_the_coordinator() -> None:
    feedback = {
        "coordinator_id": "s/bars", "queue_size": 100, "capacity": 100, "level": "hard",
        "source": "store", "ts": 1.0, "reason": "queue_full", "utilization": 1.0,
    }  # fmt: skip
    refusals = [1]

    def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if refusals:
            refusals.pop()
            return httpx.Response(
                503,
                json={"status": 503, "retry_after": 1, "feedback": feedback},
                headers={"Retry-After": "0.3"},
            )
        return accepted(len(body["bars"]))

    events: list[Feedback] = []
    store = Store(answer)
    async with client(store, on_feedback=events.append, probe_interval=0.05) as c:
        await c.write(wire_bars(5))
        await c.flush(timeout=10)
    assert store.times[1] - store.times[0] >= 0.3  # honoured
    assert c.stats.refused == 1
    assert c.stats.throttled_seconds > 0
    assert c.coordinators == {"s/bars"}
    assert [(e.level, e.via) for e in events] == [("hard", "refusal"), ("ok", "answer")]


async def test_retries_end_at_the_deadline_with_the_bars() -> None:
    store = Store(lambda r, b: httpx.Response(503, headers={"Retry-After": "0.05"}))
    c = client(store, deadline=0.5, min_rate=1e6)
    await c.write(wire_bars(3))
    began = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        await c.flush(timeout=5)
    assert time.monotonic() - began < 2
    assert info.value.attempts >= 2
    assert info.value.last_error is not None
    assert "503" in info.value.last_error
    assert len(info.value.bars) == 3
    await c.aclose()


async def test_a_retry_after_beyond_the_deadline_holds_the_batch_to_its_deadline() -> None:
    """Not failed at once: held as the store asked, until the deadline (how long it
    took is measured in tests/integration/test_client_hostile_store.py)."""
    store = Store(lambda r, b: httpx.Response(503, headers={"Retry-After": "600"}))
    c = client(store, deadline=0.3)
    await c.write(wire_bars(3))
    with pytest.raises(DeadlineExceededError, match=r"within 0\.3s \(throttled by the store"):
        await c.flush(timeout=5)
    assert store.sizes() == [3]
    assert c.stats.throttled_seconds > 0
    await c.aclose()


@pytest.mark.parametrize("status", [200, 202, 204])
async def test_a_success_that_is_not_the_stores_answer_is_a_failure(status: int) -> None:
    """A proxy's 200 page or a wrong base_url: nothing says the bars were stored."""
    store = Store(lambda r, b: httpx.Response(status, text="<html>ok</html>"))
    c = client(store)
    with pytest.raises(BarsRejectedError) as failed:
        async with c:
            await c.write(wire_bars(4))
    assert len(failed.value.bars) == 4
    assert c.stats.bars_accepted == 0


async def test_answer_levels_pause_and_a_probe_resumes_without_the_stream() -> None:
    levels = ["hard", "ok"]
    store = Store(lambda r, b: accepted(len(b["bars"]), levels.pop(0) if levels else "ok"))
    events: list[Feedback] = []
    async with client(
        store, batch_size=1, max_in_flight=1, probe_interval=0.2, on_feedback=events.append
    ) as c:
        await c.write(wire_bars(1))
        await c.flush(timeout=5)
        assert c.level == "hard"
        assert c.paused
        await c.write(wire_bars(1, 1))
        await c.flush(timeout=5)  # the probe
        assert c.level == "ok"
    assert store.times[1] - store.times[0] >= 0.15
    assert [(e.level, e.via) for e in events] == [("hard", "answer"), ("ok", "answer")]
    assert c.rate is not None  # cut on hard


async def test_write_waits_for_room_and_honours_its_timeout() -> None:
    release = asyncio.Event()

    async def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await release.wait()
        return accepted(len(body["bars"]))

    store = Store(answer)
    async with client(store, batch_size=5, max_buffered=5, max_in_flight=1) as c:
        await c.write(wire_bars(5))
        with pytest.raises(TimeoutError):
            await c.write(wire_bars(5, 5), timeout=0.1)
        assert c.buffered == 5
        waiter = asyncio.create_task(c.write(wire_bars(5, 10)))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        release.set()
        await asyncio.wait_for(waiter, 5)
    assert c.stats.write_wait_seconds > 0
    assert c.stats.bars_accepted == 10


async def test_flush_honours_its_timeout_and_the_batches_keep_going() -> None:
    release = asyncio.Event()

    async def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await release.wait()
        return accepted(len(body["bars"]))

    async with client(Store(answer)) as c:
        await c.write(wire_bars(5))
        with pytest.raises(TimeoutError):
            await c.flush(timeout=0.1)
        release.set()
        await c.flush(timeout=5)
    assert c.stats.bars_accepted == 5


async def test_a_write_larger_than_the_buffer_goes_in_pieces() -> None:
    store = Store()
    async with client(store, batch_size=4, max_buffered=8, max_in_flight=1) as c:
        await c.write(wire_bars(20))
    assert sum(store.sizes()) == 20


async def test_invalid_bars_buffer_nothing() -> None:
    store = Store()
    async with client(store) as c:
        with pytest.raises(InvalidBarError):
            await c.write([*wire_bars(1), {"symbol": "X"}])
        assert c.buffered == 0
        await c.write([])
    assert store.bodies == []


async def test_closing_refuses_writes_and_hands_back_what_was_not_confirmed() -> None:
    async def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await asyncio.sleep(3600)  # a store that never answers
        raise AssertionError

    store = Store(answer)
    c = client(store, batch_size=5, max_buffered=15, max_in_flight=1, request_timeout=60)
    await c.write(wire_bars(12))
    with pytest.raises(DeadlineExceededError, match="closed before the store confirmed 5"):
        await c.aclose(timeout=0.2)
    rest = c.take_failures()
    assert len(rest) == 1
    assert "closed with 7 bar(s) not sent" in str(rest[0])
    assert c.stats.bars_failed == 12
    await c.aclose()  # idempotent
    with pytest.raises(ClientClosedError):
        await c.write(wire_bars(1))
    with pytest.raises(ClientClosedError):
        await c.start()


async def test_a_bug_while_sending_hands_the_bars_back(caplog: pytest.LogCaptureFixture) -> None:
    def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        raise RuntimeError("bug in the transport")

    c = client(Store(answer))
    await c.write(wire_bars(2))
    with pytest.raises(DeadlineExceededError, match="unexpectedly") as info:
        await c.aclose()
    assert len(info.value.bars) == 2
    assert "sending a batch failed unexpectedly" in caplog.text


async def test_the_context_manager_does_not_mask_an_exception() -> None:
    store = Store(lambda r, b: httpx.Response(422, json={"status": 422}))
    c = client(store)

    async def use() -> None:
        async with c:
            await c.write(wire_bars(1))
            raise KeyError("the caller's own error")

    with pytest.raises(KeyError):
        await use()
    assert len(c.take_failures()) == 1


async def test_on_feedback_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def on_feedback(event: Feedback) -> None:
        raise RuntimeError("callback bug")

    store = Store(lambda r, b: accepted(len(b["bars"]), "soft"))
    async with client(store, on_feedback=on_feedback) as c:
        await c.write(wire_bars(2))
    assert c.level == "soft"
    assert "on_feedback raised" in caplog.text


def test_options_name_every_keyword_of_the_constructor() -> None:
    params = inspect.signature(StoreClient.__init__).parameters
    keywords = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(get_type_hints(ClientOptions)) == keywords - {"provider"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "store:8081"}, "base_url must start with http"),
        ({"provider": " "}, "provider must not be blank"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"batch_size": 10, "max_buffered": 5}, "max_buffered"),
        ({"linger": 0}, "linger"),
        ({"initial_backoff": 2, "max_backoff": 1}, "max_backoff"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"base_url": "http://store", "provider": "p", **kwargs}
    with pytest.raises(ValueError, match=message):
        StoreClient(**kwargs)


async def test_logging_of_level_changes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "market_data_store.client")
    store = Store(lambda r, b: accepted(len(b["bars"]), "hard"))
    async with client(store, probe_interval=0.05) as c:
        await c.write(wire_bars(1))
        await c.flush(timeout=5)
    assert "level ok -> hard" in caplog.text


async def test_every_attempt_has_a_timeout() -> None:
    async def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await asyncio.sleep(3600)  # a store that never answers
        raise AssertionError

    store = Store(answer)
    c = client(store, request_timeout=0.1, deadline=0.6)
    await c.write(wire_bars(2))
    with pytest.raises(DeadlineExceededError) as info:
        await c.flush(timeout=5)
    assert info.value.attempts >= 2
    assert (info.value.last_error or "").startswith("TimeoutError: no answer within 0.")
    assert c.stats.transport_errors == info.value.attempts
    await c.aclose()


async def test_a_second_aclose_waits_for_the_first_one_to_flush() -> None:
    async def slow(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        await asyncio.sleep(0.2)
        return accepted(len(body["bars"]))

    store = Store(slow)
    c = client(store, linger=60)
    await c.start()
    await c.write(wire_bars(3))
    first = asyncio.create_task(c.aclose())
    await asyncio.sleep(0)
    await c.aclose()  # returns only once the bars went out
    assert store.sizes() == [3]
    assert c.stats.bars_accepted == 3
    await first


# -- the default: delivered means committed; the store's credit ------------------------


def committed(count: int, credit: int | None = None, **extra: Any) -> httpx.Response:
    if credit is not None:
        extra["credit"] = credit
    return accepted(count, status=201, committed=count, dead_lettered=0, **extra)


def durable(store: Store, **options: Any) -> StoreClient:
    return client(store, wait_commit=True, **options)


async def test_the_default_waits_for_the_commit_and_names_the_producer() -> None:
    store = Store(lambda r, b: committed(len(b["bars"])))
    c = StoreClient(
        "http://store", provider="p", transport=httpx.MockTransport(store), follow_feedback=False
    )
    async with c:
        await c.write(wire_bars(3))
    [request] = store.requests
    assert request.url.params["wait"] == "commit"
    producer = request.headers["x-mds-producer"]
    assert len(producer) == 32
    assert producer.isalnum()
    assert c.stats.bars_committed == 3
    other = StoreClient("http://store", provider="p", headers={"X-MDS-Producer": "mine"})
    assert other.max_in_flight == 16
    assert other.wait_commit


async def test_a_pending_202_is_not_a_delivery_and_is_sent_again() -> None:
    def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if len(store.requests) == 1:
            return accepted(len(body["bars"]), pending=True)
        return committed(len(body["bars"]))

    store = Store(answer)
    async with durable(store) as c:
        await c.write(wire_bars(3))
    assert store.sizes() == [3, 3]
    assert (c.stats.commits_pending, c.stats.bars_committed, c.stats.bars_failed) == (1, 3, 0)


@pytest.mark.parametrize(
    ("sent", "committed", "rows", "indices"),
    [
        (5, 3, 2, [1, 4]),
        # one row refused, standing for bars 0 and 2 (one key sent twice): both come back
        (3, 1, 1, [0, 2]),
    ],
    ids=["a row per bar", "a key sent twice"],
)
async def test_dead_lettered_bars_come_back_exactly(
    sent: int, committed: int, rows: int, indices: list[int]
) -> None:
    store = Store(
        lambda r, b: accepted(
            sent,
            status=201,
            committed=committed,
            dead_lettered=rows,
            dead_lettered_indices=indices,
        )
    )
    c = durable(store)
    bars = wire_bars(sent)
    await c.write(bars)
    with pytest.raises(BarsDeadLetteredError) as info:
        await c.aclose(timeout=5)
    assert info.value.indices == indices
    assert [b["ts"] for b in info.value.bars] == [bars[i]["ts"] for i in indices]
    stats = (c.stats.bars_committed, c.stats.bars_dead_lettered, c.stats.bars_failed)
    assert stats == (committed, rows, len(indices))


@pytest.mark.parametrize("indices", [None, [7], [1, 1], [-1, 0], [2]], ids=str)
async def test_without_a_sound_list_of_indices_every_bar_comes_back(
    indices: list[int] | None,
) -> None:
    extra: dict[str, Any] = {} if indices is None else {"dead_lettered_indices": indices}
    store = Store(lambda r, b: accepted(3, status=201, committed=1, dead_lettered=2, **extra))
    c = durable(store)
    await c.write(wire_bars(3))
    with pytest.raises(BarsDeadLetteredError) as info:
        await c.aclose(timeout=5)
    assert info.value.indices is None
    assert len(info.value.bars) == 3


async def test_the_credit_cuts_batches_into_parts_and_bounds_what_is_out() -> None:
    out = 0
    most = 0

    async def answer(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        nonlocal out, most
        out += len(body["bars"])
        most = max(most, out)
        await asyncio.sleep(0.01)
        out -= len(body["bars"])
        return committed(len(body["bars"]), credit=4000, capacity=10_000)

    store = Store(answer)
    async with durable(store, batch_size=5000) as c:
        await c.write(wire_bars(15_000))
    sizes = store.sizes()
    assert sizes[0] == INITIAL_PART  # nothing known: one small request first
    assert sum(sizes) == 15_000
    # 4,000 of credit: parts of at most half of it, even within a batch (not 2,000 +
    # 2,000 + 1,000); the first batch's other 4,900 bars in three too
    assert sorted(sizes[1:]) == [1633, 1633, 1634] + [1666] * 2 + [1667] * 4
    assert most <= 4000


async def test_a_credit_under_two_thousand_goes_in_parts_of_the_whole_credit() -> None:
    store = Store(lambda r, b: committed(len(b["bars"]), credit=1600, capacity=10_000))
    async with durable(store, batch_size=2000) as c:
        await c.write(wire_bars(4100))
    # many producers share the window (or the store is slow): one request at a time
    assert store.sizes() == [INITIAL_PART] + [950] * 2 + [1000] * 2 + [100]


async def test_a_small_credit_goes_whole_and_one_request_always_goes() -> None:
    store = Store(lambda r, b: committed(len(b["bars"]), credit=60, capacity=10_000))
    async with durable(store, batch_size=500) as c:
        await c.write(wire_bars(500))
    # 100 first, then the other 400 in parts of at most the credit, of even size
    assert store.sizes()[1:] == [58] + [57] * 6


async def test_no_part_is_larger_than_half_the_stores_queue() -> None:
    # a request larger than the room under the high watermark would wait for an empty
    # queue, then make it hard: however large the credit, parts stay under it
    store = Store(lambda r, b: committed(len(b["bars"]), credit=8000, capacity=2000))
    async with durable(store, batch_size=5000) as c:
        await c.write(wire_bars(10_000))
    sizes = store.sizes()
    assert sum(sizes) == 10_000
    assert max(sizes[1:]) == 1000


async def test_a_store_without_credit_leaves_the_window_open() -> None:
    store = Store(lambda r, b: committed(len(b["bars"])))
    async with durable(store, batch_size=1000) as c:
        await c.write(wire_bars(3000))
    assert store.sizes()[0] == INITIAL_PART
    assert sorted(store.sizes()[1:]) == [900, 1000, 1000]
