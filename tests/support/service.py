"""The real service on a real socket: uvicorn serving ``create_app`` in the test's loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from litestar import Litestar
from litestar.di import Provide

from market_data_store.config import Settings, load_settings
from market_data_store.http import ServicePlugin, create_app
from market_data_store.server import build_server
from market_data_store.service import Components
from tests.support.waits import until

FAST = {
    "MDS_DATABASE_HEALTH_INTERVAL": "0.1",
    "MDS_DATABASE_HEALTH_TIMEOUT": "0.1",
    "MDS_DATABASE_CONNECT_TIMEOUT": "1",
    "MDS_DATABASE_STARTUP_TIMEOUT": "5",
    "MDS_COORDINATOR_FLUSH_INTERVAL": "0.02",
    "MDS_COORDINATOR_DRAIN_TIMEOUT": "5",
    "MDS_RETRY_INITIAL_BACKOFF_MS": "5",
    "MDS_RETRY_MAX_BACKOFF_MS": "50",
    "MDS_CIRCUIT_BREAKER_HALF_OPEN_AFTER_SEC": "0.2",
    "MDS_SERVER_INSTANCE_ID": "test",
}


def service_settings(database_url: str, tmp_dir: str, **env: str) -> Settings:
    """Settings for a test service: fast health checks and retries, a private DLQ file."""
    return load_settings(
        {
            **FAST,
            "DATABASE_URL": database_url,
            "MDS_COORDINATOR_DEAD_LETTER_PATH": f"{tmp_dir}/dlq.ndjson",
            **env,
        }
    )


@dataclass
class RunningService:
    app: Litestar
    client: httpx.AsyncClient
    base_url: str
    server: uvicorn.Server

    @property
    def components(self) -> Components:
        """The running service's parts (its coordinator, bus, pool...)."""
        return ServicePlugin.of(self.app).components


@asynccontextmanager
async def running_service(
    settings: Settings, *, dependencies: Mapping[str, Provide] | None = None
) -> AsyncIterator[RunningService]:
    app = create_app(settings, dependencies=dependencies)
    server = build_server(app, settings, host="127.0.0.1", port=0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))

    def started() -> bool:
        if task.done():
            task.result()  # start-up failed: raise its error
            raise RuntimeError("server stopped during start-up")
        return bool(server.started)

    await until(started, timeout=60, what="the server started", interval=0.01)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            yield RunningService(app, client, base_url, server)
    finally:
        ServicePlugin.of(app).lifecycle.begin_shutdown()  # as SIGTERM does: streams end now
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


ServiceFactory = Callable[..., AbstractAsyncContextManager[RunningService]]


def service_factory(database_url: str, tmp_dir: str) -> ServiceFactory:
    """``make(**env)``: a running service on ``database_url`` with these settings."""

    def make(**env: str) -> AbstractAsyncContextManager[RunningService]:
        return running_service(service_settings(database_url, tmp_dir, **env))

    return make
