"""/healthz and /readyz over real HTTP, against a real PostgreSQL behind a real proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request
from litestar.di import Provide
from market_data_core.telemetry import HealthStatus

from market_data_store.http import ServicePlugin
from market_data_store.http.probes import ProbeFastPath
from market_data_store.service import HealthSources
from market_data_store.storage import DatabaseMonitor, DatabaseStatus
from tests.support.postgres import replace_url
from tests.support.service import RunningService, running_service, service_settings
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until


@pytest.fixture
async def service(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> AsyncIterator[RunningService]:
    settings = service_settings(proxy.url_for(database_url), str(tmp_path))
    async with running_service(settings) as svc:
        # the monitor's first check may miss the tests' 0.1 s health timeout on a loaded
        # machine (it opens a connection); the tests below start from a ready service
        await wait_for_status(svc.client, "/readyz", 200)
        yield svc


def component(status: HealthStatus, name: str) -> dict[str, str]:
    (found,) = [c for c in status.components if c.name == name]
    return {"state": found.state, **found.details}


async def wait_for_status(client: httpx.AsyncClient, path: str, code: int) -> httpx.Response:
    """The first answer of ``path`` with status ``code`` (fails after 10 s)."""
    last: list[httpx.Response] = []

    async def answers() -> bool:
        last[:] = [await client.get(path)]
        return last[0].status_code == code

    await until(answers, timeout=10, what=f"{path} answering {code}", interval=0.05)
    return last[0]


async def test_healthz_returns_health_status(service: RunningService) -> None:
    for path in ("/healthz", "/health"):
        response = await service.client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        status = HealthStatus.model_validate_json(response.content)
        assert status.service == "market-data-store"
        assert status.version == "0.5.0"
        assert status.state == "healthy"
        assert abs(status.ts - time.time()) < 5
        assert {c.name for c in status.components} >= {"database", "coordinator", "feedback"}
        assert response.json()["ok"] is True  # old consumers expecting {"ok": true}
        coord = component(status, "coordinator")
        assert coord["capacity"] == "10000"
        assert coord["queue_size"] == "0"
        assert coord["utilization"] == "0.000"
        assert coord["circuit_state"] == "closed"
        assert coord["workers_alive"] == "4"


async def test_readyz_returns_health_status(service: RunningService) -> None:
    response = await service.client.get("/readyz")
    assert response.status_code == 200
    status = HealthStatus.model_validate_json(response.content)
    assert status.state == "healthy"
    assert component(status, "database")["reachable"] == "true"


async def test_readyz_503_when_database_goes_away_and_200_when_it_returns(
    service: RunningService, proxy: TcpProxy
) -> None:
    proxy.cut()
    response = await wait_for_status(service.client, "/readyz", 503)
    assert response.status_code == 503
    status = HealthStatus.model_validate_json(response.content)
    assert status.state == "unhealthy"
    database = component(status, "database")
    assert database["state"] == "unhealthy"
    assert database["reachable"] == "false"
    assert database["error"]
    assert response.json()["ok"] is False

    proxy.restore()
    response = await wait_for_status(service.client, "/readyz", 200)
    assert response.status_code == 200
    assert (
        component(HealthStatus.model_validate_json(response.content), "database")["reachable"]
        == "true"
    )


async def test_health_degraded_when_component_fails(
    service: RunningService, proxy: TcpProxy
) -> None:
    proxy.cut()
    await wait_for_status(service.client, "/readyz", 503)
    response = await service.client.get("/healthz")
    assert response.status_code == 200  # liveness never fails because a dependency does
    status = HealthStatus.model_validate_json(response.content)
    assert status.state == "degraded"
    assert component(status, "database")["state"] == "unhealthy"
    assert response.json()["ok"] is True


async def test_probes_answer_while_the_database_hangs(
    service: RunningService, proxy: TcpProxy
) -> None:
    proxy.hang()  # connections stay open, nothing comes back
    response = await wait_for_status(service.client, "/readyz", 503)
    assert response.status_code == 503
    database = component(HealthStatus.model_validate_json(response.content), "database")
    assert database["error"] == "timeout"
    # Probes read the cached result: each answers although the database never does.
    for _ in range(20):
        r = await service.client.get("/healthz", timeout=1.0)
        assert r.status_code == 200
    proxy.restore()


async def test_readyz_503_while_shutting_down(service: RunningService) -> None:
    service.components.lifecycle.begin_shutdown()
    response = await service.client.get("/readyz")
    assert response.status_code == 503
    status = HealthStatus.model_validate_json(response.content)
    assert component(status, "lifecycle") == {"state": "unhealthy", "phase": "shutting_down"}
    assert component(status, "database")["state"] == "healthy"  # the reason is named, not guessed


async def test_readyz_503_while_circuit_breaker_is_not_closed(
    database_url: str, tmp_path: Path
) -> None:
    quiet = {  # one check at start, none after: the breaker is the test's alone
        "MDS_DATABASE_HEALTH_INTERVAL": "60",
        "MDS_DATABASE_HEALTH_INTERVAL_FAILING": "60",
        "MDS_DATABASE_HEALTH_TIMEOUT": "1",
        "MDS_CIRCUIT_BREAKER_HALF_OPEN_AFTER_SEC": "3600",
    }
    async with running_service(service_settings(database_url, str(tmp_path), **quiet)) as svc:
        breaker = svc.components.coordinator.breaker
        for _ in range(5):
            await breaker.on_failure()
        response = await svc.client.get("/readyz")
        assert response.status_code == 503
        coordinator = component(HealthStatus.model_validate_json(response.content), "coordinator")
        assert coordinator["state"] == "unhealthy"
        assert coordinator["circuit_state"] == "open"

        trial = asyncio.create_task(breaker.wait_allowed())
        await asyncio.sleep(0)
        breaker.half_open_now()
        await trial
        response = await svc.client.get("/readyz")
        assert response.status_code == 503  # half-open: the trial write has not succeeded yet
        coordinator = component(HealthStatus.model_validate_json(response.content), "coordinator")
        assert coordinator["circuit_state"] == "half_open"

        await breaker.on_success()
        assert (await svc.client.get("/readyz")).status_code == 200


async def test_open_breaker_with_nothing_to_write_closes_on_the_next_check(
    service: RunningService,
) -> None:
    breaker = service.components.coordinator.breaker
    for _ in range(5):
        await breaker.on_failure()
    assert breaker.state == "open"
    # its timer alone would leave it open for good: no writer calls on it
    response = await wait_for_status(service.client, "/readyz", 200)
    assert response.status_code == 200
    assert breaker.state == "closed"


async def test_providers_can_be_overridden(database_url: str, tmp_path: Path) -> None:
    class DownMonitor(DatabaseMonitor):
        def __init__(self) -> None:
            self.status = DatabaseStatus(False, time.time(), error="overridden for the test")

    def sources_with_monitor_down(request: Request[Any, Any, Any]) -> HealthSources:
        sources = ServicePlugin.of(request.app).components.health_sources
        return dataclasses.replace(sources, db_monitor=DownMonitor())

    settings = service_settings(database_url, str(tmp_path))
    override = Provide(sources_with_monitor_down, sync_to_thread=False)
    async with running_service(settings, dependencies={"health_sources": override}) as svc:
        response = await svc.client.get("/readyz")
    assert response.status_code == 503
    database = component(HealthStatus.model_validate_json(response.content), "database")
    assert database["error"] == "overridden for the test"


async def test_sigterm_handler_announces_shutdown_at_once(service: RunningService) -> None:
    import signal

    lifecycle = service.components.lifecycle
    assert not lifecycle.shutting_down
    service.server.handle_exit(signal.SIGTERM, None)  # what the signal would call
    # uvicorn re-raises captured signals when it exits: that would end this test run.
    service.server._captured_signals.clear()
    await until(lambda: lifecycle.shutting_down, timeout=0.5, what="shutdown", interval=0.01)
    assert lifecycle.shutting_down
    assert service.components.lifecycle.shutdown_event.is_set()


async def test_head_answers_like_get_without_a_body(service: RunningService) -> None:
    for path in ("/healthz", "/health", "/readyz"):
        got = await service.client.get(path)
        head = await service.client.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-type"] == got.headers["content-type"]
        # the length of the body it would have had: only the digits of ``ts`` vary
        assert abs(int(head.headers["content-length"]) - len(got.content)) <= 3


CATEGORIES = {
    "unreachable", "timeout", "connection_lost", "auth_failed", "database_missing",
    "too_many_connections", "not_accepting_connections", "not_checked_yet", "error",
}  # fmt: skip


async def test_public_probes_carry_an_error_category_and_admin_health_the_detail(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = service_settings(proxy.url_for(database_url), str(tmp_path), ADMIN_TOKEN="t" * 32)
    async with running_service(settings) as svc:
        proxy.cut()
        await wait_for_status(svc.client, "/readyz", 503)
        for path in ("/healthz", "/readyz"):
            response = await svc.client.get(path)
            error = component(HealthStatus.model_validate_json(response.content), "database")
            assert error["error"] in CATEGORIES, error  # a category, never the driver's text
            assert "detail" not in error
            assert "127.0.0.1" not in response.text
            assert "Error" not in response.text
        assert (await svc.client.get("/admin/health")).status_code == 401
        response = await svc.client.get(
            "/admin/health", headers={"authorization": "Bearer " + "t" * 32}
        )
        assert response.status_code == 503  # readiness, with the detail for operators
        database = component(HealthStatus.model_validate_json(response.content), "database")
        assert database["error"] in CATEGORIES
        assert database["detail"]  # the driver's own words
        proxy.restore()
        response = await wait_for_status(svc.client, "/readyz", 200)
        assert "error" not in component(
            HealthStatus.model_validate_json(response.content), "database"
        )


@pytest.mark.parametrize(
    ("where", "category"),
    [
        ("missing_database", "database_missing"),
        ("closed_port", "unreachable"),
        ("hung", "timeout"),
    ],
)
async def test_database_monitor_names_the_failure(
    database_url: str, proxy: TcpProxy, where: str, category: str
) -> None:
    url = {
        "missing_database": replace_url(database_url, database="no_such_database_h8"),
        "closed_port": "postgresql://postgres@127.0.0.1:9/x",
        "hung": proxy.url_for(database_url),
    }[where]
    if where == "hung":
        proxy.hang()
    monitor = DatabaseMonitor(url, timeout=0.5)
    status = await monitor.check()
    await monitor.stop()
    assert (status.reachable, status.error) == (False, category)
    assert status.detail


async def asgi_answer(
    litestar: Litestar, app: Any, method: str, path: str
) -> tuple[int, list[Any], bytes]:
    """``app``'s answer (an ASGI layer of ``litestar``) to one request, straight over
    ASGI: no socket, no server."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {}, "litestar_app": litestar,
    }  # fmt: skip
    await app(scope, receive, send)
    start, *bodies = sent
    return start["status"], start["headers"], b"".join(m.get("body", b"") for m in bodies)


def without_ts(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data.pop("ts")
    return data


async def test_probes_answered_before_litestar_answer_what_its_routes_would(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    """The probe fast path (http/probes.py) and the HealthController routes it
    stands in front of give the same status, headers and body (but ``ts``), ready
    or not, GET or HEAD; and the probes are still measured, by route."""
    settings = service_settings(proxy.url_for(database_url), str(tmp_path))
    async with running_service(settings) as svc:
        measured: Any = svc.app.asgi_handler  # metrics -> fast path -> Litestar
        assert isinstance(measured.app, ProbeFastPath)
        fast, inner = measured, measured.app.app
        for ready in (True, False):
            if not ready:
                proxy.cut()
                await wait_for_status(svc.client, "/readyz", 503)
            for method in ("GET", "HEAD"):
                for path in ("/healthz", "/health", "/readyz"):
                    ours = await asgi_answer(svc.app, fast, method, path)
                    theirs = await asgi_answer(svc.app, inner, method, path)
                    assert ours[0] == theirs[0] == (200 if ready or path != "/readyz" else 503)
                    assert [name for name, _ in ours[1]] == [name for name, _ in theirs[1]]
                    assert dict(ours[1])[b"content-type"] == dict(theirs[1])[b"content-type"]
                    if method == "GET":
                        assert without_ts(ours[2]) == without_ts(theirs[2])
                    else:
                        assert ours[2] == b""
        metrics = (await svc.client.get("/metrics")).text
        assert 'http_route="/readyz"' in metrics
        assert 'http_response_status_code="503"' in metrics
