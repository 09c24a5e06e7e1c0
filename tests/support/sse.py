"""A small Server-Sent Events reader over a real httpx streaming response."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    event: str | None = None
    id: int | None = None
    data: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> Message:
        """The next message (a comment-only block counts as one)."""
        return await asyncio.wait_for(self._read(), timeout)

    async def next_event(self, timeout: float = 5.0) -> Message:
        """The next message with an ``event:`` (keepalives and hints skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self._read()
                if message.event is not None:
                    return message

    async def events(self, n: int, timeout: float = 5.0) -> list[Message]:
        async with asyncio.timeout(timeout):
            return [await self.next_event(timeout) for _ in range(n)]

    async def _read(self) -> Message:
        message = Message()
        seen = False
        async for line in self._lines:
            if line == "":
                if seen:
                    return message
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                message.comments.append(value)
            elif name == "event":
                message.event = value
            elif name == "id":
                message.id = int(value)
            elif name == "data":
                message.data = f"{message.data}\n{value}" if message.data else value
            elif name == "retry":
                message.retry = int(value)
        raise EOFError("stream ended")


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, path: str = "/v1/feedback/stream", **kwargs: Any
) -> AsyncIterator[SseReader]:
    async with client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseReader(response)
