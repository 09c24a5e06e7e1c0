"""``http.server.request.duration`` per the stable OpenTelemetry HTTP semantic conventions.

``HttpServerMetrics`` wraps the app's ASGI handler (outside routing, so 404s and
405s are measured too) and labels each request by its route *template*
(``/v1/bars/{symbol}``), read from the scope after the router filled it in, never
by the raw path: raw paths would make one time series per URL.

A request that got no response (the client went away first, or an exception
escaped before one started) records ``error.type`` (``aborted``, or the
exception's type name) and no ``http.response.status_code``; a request without a
route has no ``http.route`` at all (not an empty one).

Recording is the hot path of every request, so it does not go through the SDK's
``Histogram.record`` (tens of microseconds with four attributes): ``HttpDuration``
aggregates locally - per attribute set, bucket counts and a sum in plain Python
numbers, attributes built once per series - and hands the result over at
collection time, as Prometheus families (``collect``, registered on the app's
registry) and as OTLP data points (``metric``, added by ``WithHttpDuration``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.metrics_core import Metric as PrometheusMetric

ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]

NAME = "http.server.request.duration"
UNIT = "s"
DESCRIPTION = "Duration of HTTP server requests."
PROMETHEUS_NAME = "http_server_request_duration_seconds"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ABORTED = "aborted"
"""``error.type`` of a request whose client disconnected before the response started."""

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                            "TRACE", "PATCH"})  # fmt: skip
_LE = [*(repr(b) for b in BUCKETS), "+Inf"]

# (method, route or None, status or None, scheme, error.type or None)
SeriesKey = tuple[str, str | None, int | None, str, str | None]


class _Series:
    __slots__ = ("attributes", "counts", "labels", "max", "min", "sum")

    def __init__(self, attributes: dict[str, str | int], labels: dict[str, str]) -> None:
        self.attributes = attributes
        self.labels = labels  # Prometheus labels (sanitised names, string values, scope)
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")


class HttpDuration:
    """The histogram, aggregated in memory; cumulative since construction.

    Only the event loop records; collection (a scrape on the loop, or the OTLP
    reader's thread) copies each series' counts, so a scrape never blocks a request.
    """

    def __init__(self, scope_name: str, scope_version: str) -> None:
        self.scope = InstrumentationScope(scope_name, scope_version)
        self._scope_labels = {
            "otel_scope_name": scope_name,
            "otel_scope_schema_url": "",
            "otel_scope_version": scope_version,
        }
        self._series: dict[SeriesKey, _Series] = {}
        self._start_ns = time.time_ns()

    def record(self, key: SeriesKey, seconds: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new_series(key)
        series.counts[bisect_left(BUCKETS, seconds)] += 1
        series.sum += seconds
        if seconds < series.min:
            series.min = seconds
        if seconds > series.max:
            series.max = seconds

    def _new_series(self, key: SeriesKey) -> _Series:
        method, route, status, scheme, error = key
        attributes: dict[str, str | int] = {"http.request.method": method, "url.scheme": scheme}
        if route is not None:
            attributes["http.route"] = route
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:
            attributes["error.type"] = error
        labels = {k.replace(".", "_"): str(v) for k, v in attributes.items()}
        labels.update(self._scope_labels)
        return _Series(attributes, dict(sorted(labels.items())))

    def _snapshot(self) -> list[tuple[_Series, list[int], float, float, float]]:
        return [(s, s.counts[:], s.sum, s.min, s.max) for s in list(self._series.values())]

    # -- Prometheus (a prometheus_client collector) ------------------------------------------

    def collect(self) -> Iterator[PrometheusMetric]:
        """The family as the OpenTelemetry Prometheus exporter renders a histogram, except
        that an absent attribute is an absent label (that exporter fills in ``""``)."""
        family = PrometheusMetric(PROMETHEUS_NAME, DESCRIPTION, "histogram", "seconds")
        for series, counts, total, _, _ in self._snapshot():
            labels = series.labels
            cumulative = 0
            for le, count in zip(_LE, counts, strict=True):
                cumulative += count
                family.add_sample(f"{PROMETHEUS_NAME}_bucket", {**labels, "le": le}, cumulative)
            family.add_sample(f"{PROMETHEUS_NAME}_count", labels, cumulative)
            family.add_sample(f"{PROMETHEUS_NAME}_sum", labels, total)
        if family.samples:
            yield family

    # -- OpenTelemetry SDK data (OTLP) --------------------------------------------------------

    def metric(self) -> Metric | None:
        """The histogram as SDK metric data (cumulative), None before any request."""
        now = time.time_ns()
        points = [
            HistogramDataPoint(
                attributes=series.attributes,
                start_time_unix_nano=self._start_ns,
                time_unix_nano=now,
                count=sum(counts),
                sum=total,
                bucket_counts=counts,
                explicit_bounds=BUCKETS,
                min=low,
                max=high,
            )
            for series, counts, total, low, high in self._snapshot()
        ]
        if not points:
            return None
        data = Histogram(points, AggregationTemporality.CUMULATIVE)
        return Metric(NAME, DESCRIPTION, UNIT, data)


class WithHttpDuration(MetricExporter):
    """An exporter that adds ``HttpDuration``'s histogram to every export of ``inner``."""

    def __init__(self, inner: MetricExporter, duration: HttpDuration, resource: Resource) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._duration = duration
        self._resource = resource

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        metric = self._duration.metric()
        if metric is not None:
            metrics_data = MetricsData(self._with(list(metrics_data.resource_metrics), metric))
        return self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def _with(self, resources: list[ResourceMetrics], metric: Metric) -> list[ResourceMetrics]:
        """``metric`` added to its scope's metrics (exporters key scopes by identity of
        name and version: a second ``ScopeMetrics`` of the same scope would replace the
        first)."""
        if not resources:
            return [
                ResourceMetrics(
                    self._resource, [ScopeMetrics(self._duration.scope, [metric], "")], ""
                )
            ]
        first = resources[0]
        scopes = list(first.scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope == self._duration.scope:
                scopes[i] = ScopeMetrics(scope.scope, [*scope.metrics, metric], scope.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(self._duration.scope, [metric], ""))
        resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return resources

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


# -- the ASGI wrapper ---------------------------------------------------------------------

RouteOf405 = Callable[[Any], str | None]
"""The route template of a request answered 405 (the router found the path, not the
method, so it filled in no template)."""


class _Exchange:
    """What one request's response did: its status, and whether the client left first."""

    __slots__ = ("_receive", "_send", "disconnected", "status")

    def __init__(self, receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send
        self.status: int | None = None
        self.disconnected = False

    async def receive(self) -> Any:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Any) -> None:
        # A response started after the client left goes nowhere: it has no status.
        if message["type"] == "http.response.start" and not self.disconnected:
            self.status = message["status"]
        await self._send(message)


class HttpServerMetrics:
    def __init__(
        self, app: ASGIApp, duration: HttpDuration, *, route_of_405: RouteOf405 | None = None
    ) -> None:
        self.app = app
        self.duration = duration
        self._route_of_405 = route_of_405

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        exchange = _Exchange(receive, send)
        error: str | None = None
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            error = type(exc).__qualname__
            raise
        finally:
            elapsed = time.perf_counter() - started
            status = exchange.status
            if status is None:
                error = error or ABORTED
            elif status >= 500 and error is None:
                error = str(status)
            route = scope.get("path_template") or None
            if route is None and status == 405 and self._route_of_405 is not None:
                route = self._route_of_405(scope)
            method = scope["method"]
            self.duration.record(
                (
                    method if method in _KNOWN_METHODS else "_OTHER",
                    route,
                    status,
                    scope.get("scheme", "http"),
                    error,
                ),
                elapsed,
            )


__all__: Sequence[str] = [
    "ABORTED",
    "BUCKETS",
    "HttpDuration",
    "HttpServerMetrics",
    "WithHttpDuration",
]
