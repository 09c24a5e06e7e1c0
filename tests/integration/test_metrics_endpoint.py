"""/metrics: Prometheus text from the OpenTelemetry SDK, parsed by prometheus_client."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from litestar import get
from litestar.params import FromPath
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.bars import rows
from tests.support.service import RunningService, running_service, service_settings
from tests.support.waits import until


@get("/test/echo/{name:str}", sync_to_thread=False)
def echo(name: FromPath[str]) -> dict[str, str]:
    return {"name": name}


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running_service(service_settings(database_url, str(tmp_path))) as svc:
        svc.app.register(echo)
        yield svc


async def scrape(service: RunningService) -> dict[str, list[Sample]]:
    response = await service.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def paths(families: dict[str, list[Sample]], sink: str = "bars") -> dict[str, float]:
    """``mds_sink_batches`` of one sink, by path."""
    return {
        s.labels["path"]: s.value for s in families["mds_sink_batches"] if s.labels["sink"] == sink
    }


async def test_metrics_expose_coordinator_and_sink_instruments(service: RunningService) -> None:
    coordinator = service.components.coordinator
    await coordinator.submit_many(rows(30, received_at=datetime.now(UTC)))
    await coordinator.wait_idle()
    families = await scrape(service)
    for name in (
        "mds_coordinator_items_submitted",
        "mds_coordinator_items_dropped",
        "mds_coordinator_items_dead_lettered",
        "mds_coordinator_queue_depth",
        "mds_coordinator_queue_capacity",
        "mds_coordinator_workers_alive",
        "mds_coordinator_circuit_state",
        "mds_coordinator_backpressure_level",
        "mds_coordinator_batches_written",
        "mds_coordinator_write_duration_seconds",
        "mds_sink_rows_written",
        "mds_sink_rows_received",
        "mds_sink_batches",
        "mds_sink_conflicts",
        "target_info",
    ):
        assert name in families, name

    def value(name: str, suffix: str = "") -> float:
        (sample,) = [
            s
            for s in families[name]
            if s.name == name + suffix and s.labels.get("sink", "bars") == "bars"
        ]
        return sample.value

    assert value("mds_coordinator_items_submitted", "_total") == 30
    assert value("mds_coordinator_queue_capacity") == 10_000
    assert value("mds_coordinator_workers_alive") == 4
    assert value("mds_sink_rows_written", "_total") == 30
    batches = paths(families)
    assert batches["copy"] >= 1  # new bars: straight into the table
    assert batches["merge"] == 0
    # existing keys, accepted later: merged
    await coordinator.submit_many(rows(5, received_at=datetime.now(UTC)))
    await coordinator.wait_idle()
    families = await scrape(service)
    assert value("mds_sink_conflicts", "_total") == 1
    assert paths(families)["merge"] == 1
    assert paths(families, "facts") == {"copy": 0, "merge": 0}  # the other kinds' sink
    assert value("mds_coordinator_write_duration_seconds", "_count") >= 1
    labels = families["mds_coordinator_queue_depth"][0].labels
    assert labels["coordinator_id"] == "test/bars"  # <server.instance_id>/bars
    (info,) = families["target_info"]
    assert info.labels["service_name"] == "market-data-store"
    assert info.labels["service_version"] == "0.5.0"


async def test_the_fast_path_can_be_turned_off(database_url: str, tmp_path: Path) -> None:
    settings = service_settings(database_url, str(tmp_path), MDS_DATABASE_COPY_FAST_PATH="false")
    async with running_service(settings) as svc:
        await svc.components.coordinator.submit_many(rows(10))
        await svc.components.coordinator.wait_idle()
        families = await scrape(svc)
    assert paths(families) == {"copy": 0, "merge": 1}


async def test_http_duration_is_labelled_by_route_template(service: RunningService) -> None:
    for name in ("alice", "bob", "carol"):
        assert (await service.client.get(f"/test/echo/{name}")).status_code == 200
    await service.client.get("/healthz")
    await service.client.get("/no/such/route")
    families = await scrape(service)
    samples = families["http_server_request_duration_seconds"]
    routes = {s.labels.get("http_route") for s in samples}
    assert "/test/echo/{name}" in routes
    assert "/healthz" in routes
    assert not any(r and ("alice" in r or "bob" in r) for r in routes)  # never the raw path
    count = [
        s
        for s in samples
        if s.name.endswith("_count") and s.labels.get("http_route") == "/test/echo/{name}"
    ]
    assert count[0].value == 3
    assert count[0].labels["http_request_method"] == "GET"
    assert count[0].labels["http_response_status_code"] == "200"
    not_found = [s for s in samples if s.labels.get("http_response_status_code") == "404"]
    assert not_found  # unrouted requests are measured too, without a route
    assert all("http_route" not in s.labels for s in not_found)


async def test_ready_gauge_follows_readiness(service: RunningService) -> None:
    families = await scrape(service)
    assert [s.value for s in families["mds_service_ready"]] == [1.0]
    service.components.lifecycle.begin_shutdown()  # readiness fails from now on
    assert (await service.client.get("/readyz")).status_code == 503
    families = await scrape(service)
    assert [s.value for s in families["mds_service_ready"]] == [0.0]


def abort_upload(base_url: str, sent: int = 1000, length: int = 100_000) -> None:
    """A client that announces a body, sends part of it, and goes away (RST)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"POST /v1/bars HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"[" + b" " * (sent - 1))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def series(samples: list[Sample], suffix: str = "_count") -> list[dict[str, str]]:
    return [s.labels for s in samples if s.name.endswith(suffix)]


async def test_an_aborted_upload_is_an_error_without_a_status_code(
    service: RunningService,
) -> None:
    for _ in range(5):
        await asyncio.to_thread(abort_upload, service.base_url)
    response: httpx.Response | None = None
    samples: list[Sample] = []
    aborted: list[Sample] = []

    async def all_seen() -> bool:
        nonlocal response, samples, aborted
        response = await service.client.get("/metrics")
        samples = scrape_text(response.text)["http_server_request_duration_seconds"]
        aborted = [s for s in samples if s.name.endswith("_count")
                   and s.labels.get("error_type") == "aborted"]  # fmt: skip
        return sum(s.value for s in aborted) >= 5

    # the server sees each disconnect a little after the client left
    await until(all_seen, what="5 aborted uploads measured", interval=0.05)
    assert response is not None
    assert sum(s.value for s in aborted) == 5
    (labels,) = [s.labels for s in aborted]
    # no response went out: no status code (not even an empty one), never a 5xx
    assert "http_response_status_code" not in labels
    assert labels["http_route"] == "/v1/bars"
    assert labels["http_request_method"] == "POST"
    assert not [s for s in series(samples) if s.get("http_response_status_code", "")[:1] == "5"]
    assert 'http_response_status_code=""' not in response.text


async def test_unrouted_requests_have_no_route_label_and_405_keeps_its_route(
    service: RunningService,
) -> None:
    assert (await service.client.get("/no/such/route")).status_code == 404
    assert (await service.client.delete("/healthz")).status_code == 405
    assert (await service.client.put("/test/echo/alice")).status_code == 405
    response = await service.client.get("/metrics")
    samples = scrape_text(response.text)["http_server_request_duration_seconds"]
    by_status = {s["http_response_status_code"]: s for s in series(samples)
                 if "http_response_status_code" in s}  # fmt: skip
    assert "http_route" not in by_status["404"]  # absent, not http_route=""
    assert 'http_route=""' not in response.text
    routes_405 = {s.get("http_route") for s in series(samples)
                  if s.get("http_response_status_code") == "405"}  # fmt: skip
    assert routes_405 == {"/healthz", "/test/echo/{name}"}


def scrape_text(text: str) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}
