"""With OTEL_EXPORTER_OTLP_ENDPOINT set, metrics are pushed over OTLP/HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from market_data_store.telemetry import build_telemetry
from market_data_store.telemetry.provider import otlp_metrics_url
from tests.support.waits import until_sync


class Collector(HTTPServer):
    received: list[tuple[str, str, bytes]]


class Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.received.append((self.path, self.headers["content-type"], body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(("127.0.0.1", 0), Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_metrics_are_pushed_to_the_collector(collector: Collector) -> None:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    telemetry = build_telemetry(
        "0.4.0",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
    )
    assert telemetry.pushes_otlp
    counter = telemetry.meter.create_counter("mds.test.pushed")
    counter.add(3)
    telemetry.http_duration.record(("GET", "/healthz", 200, "http", None), 0.002)
    telemetry.shutdown()  # flushes the periodic reader: one export at least
    until_sync(lambda: collector.received, what="an export")
    path, content_type, body = collector.received[0]
    assert path == "/v1/metrics"
    assert content_type == "application/x-protobuf"
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    resource = request.resource_metrics[0].resource
    attrs = {a.key: a.value.string_value for a in resource.attributes}
    assert attrs["service.name"] == "market-data-store"
    names = {
        m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert "mds.test.pushed" in names
    (duration,) = [m for rm in request.resource_metrics for sm in rm.scope_metrics
                   for m in sm.metrics if m.name == "http.server.request.duration"]  # fmt: skip
    (point,) = duration.histogram.data_points
    assert (point.count, point.sum, duration.unit) == (1, 0.002, "s")
    assert {a.key for a in point.attributes} == {
        "http.request.method", "http.route", "http.response.status_code", "url.scheme"
    }  # fmt: skip


def test_no_push_without_endpoint() -> None:
    telemetry = build_telemetry("0.4.0", {})
    assert not telemetry.pushes_otlp
    telemetry.shutdown()


def test_endpoint_variables() -> None:
    assert otlp_metrics_url({}) is None
    assert otlp_metrics_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == (
        "http://c:4318/v1/metrics"
    )
    assert (
        otlp_metrics_url(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m/x",
            }
        )
        == "http://m/x"
    )
