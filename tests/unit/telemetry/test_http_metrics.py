"""``HttpDuration``: the same exposition as the SDK's histogram, at a fraction of the cost."""

from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from market_data_store.telemetry.http_metrics import (
    BUCKETS,
    DESCRIPTION,
    NAME,
    UNIT,
    HttpDuration,
    SeriesKey,
)

VALUES = [0.0001, 0.005, 0.0051, 0.3, 0.75, 9.99, 10.0, 11.0, 0.02, 0.02]
KEYS: list[SeriesKey] = [
    ("GET", "/healthz", 200, "http", None),
    ("POST", "/v1/bars", 503, "https", "503"),
]


def sdk_exposition() -> bytes:
    """What the SDK's own histogram and Prometheus exporter print for the same records."""
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    histogram = provider.get_meter("market_data_store", "0.4.0").create_histogram(
        NAME, unit=UNIT, description=DESCRIPTION, explicit_bucket_boundaries_advisory=BUCKETS
    )
    for method, route, status, scheme, error in KEYS:
        attributes: dict[str, str | int] = {"http.request.method": method, "url.scheme": scheme}
        if route is not None:
            attributes["http.route"] = route
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:
            attributes["error.type"] = error
        for v in VALUES:
            histogram.record(v, attributes)
    try:
        return generate_latest(registry)
    finally:
        provider.shutdown()


def local_exposition() -> tuple[bytes, HttpDuration]:
    registry = CollectorRegistry()
    duration = HttpDuration("market_data_store", "0.4.0")
    registry.register(duration)
    for key in KEYS:
        for v in VALUES:
            duration.record(key, v)
    return generate_latest(registry), duration


def http_lines(text: bytes) -> list[bytes]:
    lines = [line for line in text.splitlines() if b"http_server" in line]
    return sorted(line.replace(b'error_type="",', b"") for line in lines)


def test_prometheus_text_is_the_sdk_histograms() -> None:
    """Same name, help, type, buckets, labels (error_type too, where present) and values."""
    local, _ = local_exposition()
    expected = sdk_exposition()
    # the SDK fills labels absent from a series with "" (http_lines drops those): the one
    # difference, by design
    assert http_lines(local) == http_lines(expected)


def test_absent_attributes_are_absent_labels() -> None:
    registry = CollectorRegistry()
    duration = HttpDuration("market_data_store", "0.4.0")
    registry.register(duration)
    duration.record(("GET", None, 404, "http", None), 0.001)
    duration.record(("POST", "/v1/bars", None, "http", "aborted"), 0.001)
    text = generate_latest(registry).decode()
    assert '=""' not in text.replace('otel_scope_schema_url=""', "")
    assert 'error_type="aborted",http_request_method="POST",http_route="/v1/bars",le="+Inf"' in text


def test_sdk_metric_data_matches_the_sdk_histogram() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("m").create_histogram(
        NAME, unit=UNIT, description=DESCRIPTION, explicit_bucket_boundaries_advisory=BUCKETS
    )
    attributes: dict[str, str | int] = {"http.request.method": "GET", "url.scheme": "http",
                  "http.route": "/healthz", "http.response.status_code": 200}  # fmt: skip
    for v in VALUES:
        histogram.record(v, attributes)
    data = reader.get_metrics_data()
    assert data is not None
    (want,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert isinstance(want, HistogramDataPoint)
    provider.shutdown()
    _, duration = local_exposition()
    metric = duration.metric()
    assert metric is not None
    assert (metric.name, metric.unit, metric.description) == (NAME, UNIT, DESCRIPTION)
    got = metric.data.data_points[0]
    assert isinstance(got, HistogramDataPoint)
    assert dict(got.attributes or {}) == attributes
    assert (got.count, got.sum, list(got.bucket_counts), list(got.explicit_bounds)) == (
        want.count, want.sum, list(want.bucket_counts), list(want.explicit_bounds)
    )  # fmt: skip
    assert (got.min, got.max) == (want.min, want.max)


def test_nothing_is_exported_before_the_first_request() -> None:
    duration = HttpDuration("market_data_store", "0.4.0")
    assert duration.metric() is None
    assert list(duration.collect()) == []
