"""The service's MeterProvider: Prometheus pull at /metrics, OTLP push when configured.

Each app gets its own prometheus ``CollectorRegistry`` (not the global one), so
several apps in one process (tests, benchmarks) never collide.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder

from .http_metrics import HttpDuration, WithHttpDuration
from .instruments import Instruments

SERVICE_NAME = "market-data-store"
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
METER_NAME = "market_data_store"


@dataclass
class Telemetry:
    provider: MeterProvider
    registry: CollectorRegistry
    meter: Meter
    pushes_otlp: bool
    http_duration: HttpDuration
    """``http.server.request.duration``, aggregated outside the SDK (see ``http_metrics``)."""
    instruments: Instruments
    """The service's own instruments, on ``meter``."""

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """Every instrument in the format the scraper's ``Accept`` header asks for
        (Prometheus text 0.0.4 by default, OpenMetrics on request), and its content type.
        Runs the observable callbacks, which only read in-memory state."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def shutdown(self) -> None:
        """Flush (OTLP) and stop the readers."""
        self.provider.shutdown()


def build_telemetry(version: str, environ: Mapping[str, str] | None = None) -> Telemetry:
    """A MeterProvider with a Prometheus reader, plus an OTLP/HTTP pusher when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the metrics-specific variable) is set."""
    environ = os.environ if environ is None else environ
    registry = CollectorRegistry(auto_describe=True)
    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": version})
    http_duration = HttpDuration(METER_NAME, version)
    registry.register(http_duration)
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    otlp_url = otlp_metrics_url(environ)
    if otlp_url:
        # Headers, timeout and compression still come from the OTEL_* variables.
        exporter = WithHttpDuration(OTLPMetricExporter(endpoint=otlp_url), http_duration, resource)
        readers.append(PeriodicExportingMetricReader(exporter))
    provider = MeterProvider(resource=resource, metric_readers=readers)
    meter = provider.get_meter(METER_NAME, version)
    return Telemetry(
        provider, registry, meter, otlp_url is not None, http_duration, Instruments.on(meter)
    )


def otlp_metrics_url(environ: Mapping[str, str]) -> str | None:
    """Where to push metrics, per the OTLP exporter spec: the signal-specific variable
    as is, else the base endpoint plus ``/v1/metrics``; None when neither is set."""
    if url := environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        return url
    if base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + "/v1/metrics"
    return None
