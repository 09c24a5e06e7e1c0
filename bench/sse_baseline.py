"""The baseline of bench/sse.py: the plainest Litestar broadcast, measured in the same run.

    .venv/bin/python bench/sse_baseline.py --port PORT --coordinator-id ID
                                           --capacity N --high N --low N

Per subscriber an ``asyncio.Queue`` registered in a set and a ``ServerSentEvent``
over an async generator that JSON-encodes each event it takes from its queue,
served by uvicorn as the service is (httptools, uvloop, no access log, lifespan
on). Its events are the service's JSON, with the queue sizes and reasons of a bars
queue of ``--capacity``, ``--high`` and ``--low`` (the bench's service settings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from litestar import Litestar, get, post
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sse_client import STREAM

BASELINE_GRACE = 5  # the baseline's uvicorn timeout_graceful_shutdown

BaselineItem = tuple[int, dict[str, Any]]  # (id, event)


@dataclass(frozen=True)
class QueueShape:
    """The service's bars queue the baseline's events imitate."""

    coordinator_id: str
    capacity: int
    high: int
    low: int

    def sizes(self, level: str) -> tuple[int, str | None]:
        """(queue_size, reason) of a ``level`` event, as the service's bars queue sends it."""
        return {
            "soft": (self.low + 1, None),
            "hard": (self.high, None),
            "ok": (self.low, "queue_recovered"),
        }[level]


def baseline_event(
    shape: QueueShape, level: str, queue_size: int, reason: str | None
) -> dict[str, Any]:
    """The service's event JSON (Core's FeedbackEvent + reason, utilization), ts now."""
    return {
        "coordinator_id": shape.coordinator_id,
        "queue_size": queue_size,
        "capacity": shape.capacity,
        "level": level,
        "source": "store",
        "ts": time.time(),
        "reason": reason,
        "utilization": round(queue_size / shape.capacity, 4),
    }


def baseline_app(shape: QueueShape) -> Litestar:
    """``GET /v1/feedback/stream``, ``POST /publish``, ``GET /healthz``; the process ends
    by itself if the bench goes away without stopping it."""
    queues: set[asyncio.Queue[BaselineItem]] = set()
    latest: list[BaselineItem] = [(0, baseline_event(shape, "ok", 0, "service_started"))]

    async def messages(queue: asyncio.Queue[BaselineItem]) -> AsyncIterator[ServerSentEventMessage]:
        try:
            while True:
                seq, event = await queue.get()
                yield ServerSentEventMessage(data=json.dumps(event), event="feedback", id=seq)
        finally:
            queues.discard(queue)

    @get(STREAM, sync_to_thread=False)
    def stream() -> ServerSentEvent:
        queue: asyncio.Queue[BaselineItem] = asyncio.Queue()
        queue.put_nowait(latest[-1])  # the snapshot: the latest event
        queues.add(queue)
        return ServerSentEvent(messages(queue))

    @post("/publish", status_code=200)
    async def publish(data: dict[str, Any]) -> dict[str, int]:
        """``{"steps": [[level, delay], ...]}``: each level published ``delay`` s after
        the previous one (at once when 0)."""
        for level, delay in data["steps"]:
            if delay:
                await asyncio.sleep(delay)
            item = (latest[-1][0] + 1, baseline_event(shape, level, *shape.sizes(level)))
            latest[-1] = item
            for queue in queues:
                queue.put_nowait(item)
        return {"last_id": latest[-1][0]}

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, int]:
        return {"subscribers": len(queues)}

    parent = os.getppid()

    def watch_parent() -> None:  # once a second
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            asyncio.get_running_loop().call_later(1, watch_parent)

    return Litestar(
        [stream, publish, healthz],
        on_startup=[watch_parent],
        openapi_config=None,
        logging_config=None,  # the basicConfig of serve_baseline
    )


def serve_baseline(port: int, shape: QueueShape) -> None:
    """uvicorn as ``market_data_store.server.build_server`` sets it up."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        baseline_app(shape),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=BASELINE_GRACE,
        log_config=None,
    )
    # uvicorn re-raises SIGTERM once shut down: let the process end with 0 (as the service)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.Server(config).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--coordinator-id", required=True)
    parser.add_argument("--capacity", type=int, required=True)
    parser.add_argument("--high", type=int, required=True)
    parser.add_argument("--low", type=int, required=True)
    args = parser.parse_args()
    serve_baseline(args.port, QueueShape(args.coordinator_id, args.capacity, args.high, args.low))


if __name__ == "__main__":
    main()
