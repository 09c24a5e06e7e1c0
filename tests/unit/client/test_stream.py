"""The client's feedback follower: SSE framing, resume with Last-Event-ID, failures."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from market_data_store.client import Feedback
from market_data_store.client.stream import MAX_LINE, FeedbackFollower, StreamError, _Parser
from tests.support.waits import until

EVENT = (
    b'{"coordinator_id":"a/bars","queue_size":8,"capacity":10,"level":"hard",'
    b'"source":"store","ts":1.0,"reason":null,"utilization":0.8}'
)


def test_parser_frames_messages() -> None:
    parser = _Parser()
    messages = parser.feed(b"retry: 150\r\n\r\n: keepalive\n\nevent: feedback\nid: 7\ndata: {")
    assert [m.retry for m in messages] == ["150"]  # the comment-only block is no message
    messages = parser.feed(b'"a":\ndata: 1}\n\nevent: reset\nid\n\n')
    assert [(m.event, m.id, m.data) for m in messages] == [
        ("feedback", "7", '{"a":\n1}'),
        ("reset", "", ""),
    ]


def test_parser_bounds_lines_and_data() -> None:
    with pytest.raises(StreamError, match="line too long"):
        _Parser().feed(b"data: " + b"x" * MAX_LINE)
    parser = _Parser()
    half = b"data: " + b"x" * (MAX_LINE // 2) + b"\n"
    parser.feed(half + half[:-1])
    with pytest.raises(StreamError, match="data too long"):
        parser.feed(b"\n" + half)


class Server:
    """Answers each connection of the follower from a script; records the requests."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.done = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.answers) == 1:
            self.done.set()
        if not self.answers:
            await asyncio.sleep(3600)
        return self.answers.pop(0)


def sse(body: bytes, media_type: str = "text/event-stream") -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": media_type})


async def test_follower_reports_events_resets_and_resumes_after_the_last_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = Server(
        sse(
            b"retry: 10\n\nevent: feedback\nid: 41\ndata: " + EVENT + b"\n\n"
            b"event: feedback\nid: 42\ndata: {not json}\n\n"
        ),
        httpx.Response(503, text="busy"),
        sse(b"data: nothing", "text/html"),
        sse(b'event: reset\nid: 99\ndata: {"reason":"x"}\n\n'),
    )
    events: list[Feedback] = []
    resets: list[bool] = []
    live: list[bool] = []
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(server), base_url="http://store"
    ) as http:
        follower = FeedbackFollower(
            http,
            on_event=events.append,
            on_reset=lambda: resets.append(True),
            on_live=live.append,
            max_delay=0.05,
        )
        task = asyncio.create_task(follower.run())
        await asyncio.wait_for(server.done.wait(), 5)
        await until(lambda: len(server.requests) == 5, what="a reconnect after the last stream")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(e.coordinator_id, e.level, e.via) for e in events] == [("a/bars", "hard", "stream")]
    assert follower.bad_events == 1
    assert resets == [True]
    assert live == [True, False, True, False]
    assert follower.connects == 2
    assert follower.last_event_id == "99"
    sent = [r.headers.get("last-event-id") for r in server.requests]
    assert sent[0] is None
    assert sent[1:4] == ["42", "42", "42"]
    assert follower.retry == 0.1  # the hint, floored
    assert "feedback stream unavailable (StreamError: HTTP 503)" in caplog.text


async def test_a_bug_in_a_callback_does_not_end_the_follower(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(
        sse(b"retry: 10\n\nevent: feedback\nid: 1\ndata: " + EVENT + b"\n\n"),
        sse(b"event: feedback\nid: 2\ndata: " + EVENT + b"\n\n"),
    )
    calls = 0

    def boom(event: Feedback) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(server), base_url="http://store"
    ) as http:
        follower = FeedbackFollower(
            http, on_event=boom, on_reset=lambda: None, on_live=lambda _: None, max_delay=0.05
        )
        task = asyncio.create_task(follower.run())
        await asyncio.wait_for(server.done.wait(), 5)
        await until(lambda: len(server.requests) == 3, what="a reconnect after the last stream")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls == 2
    assert "feedback stream failed" in caplog.text
