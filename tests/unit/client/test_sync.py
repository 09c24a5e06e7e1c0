"""SyncStoreClient: the async client on a loop of its own, called from plain threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import httpx
import msgspec
import pytest

from market_data_store.client import (
    ClientClosedError,
    DeadlineExceededError,
    Feedback,
    SyncStoreClient,
)
from tests.support.bars import wire_bars


class Store:
    def __init__(self, *, answer: bool = True) -> None:
        self.answer = answer
        self.threads: set[str] = set()
        self.sizes: list[int] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.threads.add(threading.current_thread().name)
        if not self.answer:
            await asyncio.sleep(3600)
        count = len(msgspec.msgpack.decode(request.content)["bars"])
        self.sizes.append(count)
        body = {"accepted": count, "level": "soft", "queue_size": 1, "capacity": 2,
                "coordinator_id": "s/bars"}  # fmt: skip
        if request.url.params.get("wait") == "commit":  # the default: answered at commit
            return httpx.Response(201, json={**body, "committed": count, "dead_lettered": 0})
        return httpx.Response(202, json=body)


def make(store: Store, **options: Any) -> SyncStoreClient:
    return SyncStoreClient(
        "http://store",
        provider="p",
        follow_feedback=False,
        transport=httpx.MockTransport(store),
        **options,
    )


def test_writes_run_on_the_clients_own_thread() -> None:
    store = Store()
    with make(store, batch_size=10) as client:
        client.write(wire_bars(25))
        client.flush(timeout=5)
        assert sorted(store.sizes) == [5, 10, 10]
        assert client.stats.bars_accepted == 25
        assert client.level == "soft"
        assert client.rate is not None
    assert store.threads == {"store-client"}
    with pytest.raises(ClientClosedError):
        client.write(wire_bars(1))
    with pytest.raises(ClientClosedError):
        client.flush()
    assert client.take_failures() == []


def test_calling_it_from_its_own_thread_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = []
    client: SyncStoreClient | None = None

    def on_feedback(event: Feedback) -> None:
        assert client is not None
        try:
            client.flush()
        except RuntimeError as exc:
            errors.append(exc)

    client = make(Store(), on_feedback=on_feedback)
    client.write(wire_bars(1))
    client.flush(timeout=5)
    client.close()
    assert len(errors) == 1
    assert "its own thread" in str(errors[0])


def test_timeouts_and_what_closing_hands_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    client = make(Store(answer=False), batch_size=5)
    client.write(wire_bars(5))
    with pytest.raises(TimeoutError):
        client.flush(timeout=0.1)
    with pytest.raises(DeadlineExceededError, match="closed before the store confirmed 5"):
        client.close(timeout=0.2)
    client.close()  # idempotent
    assert client.take_failures() == []


def test_bad_options_stop_the_thread() -> None:
    before = threading.active_count()
    with pytest.raises(ValueError, match="batch_size"):
        SyncStoreClient("http://store", provider="p", batch_size=0)
    assert threading.active_count() == before
