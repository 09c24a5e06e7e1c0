"""OpenTelemetry: the meter provider, the service's instruments, HTTP server metrics."""

from .http_metrics import HttpServerMetrics
from .instruments import (
    CoordinatorInstruments,
    FeedbackInstruments,
    Instruments,
    RetentionInstruments,
    ServiceInstruments,
    SinkInstruments,
    TransportInstruments,
)
from .provider import PROMETHEUS_CONTENT_TYPE, Telemetry, build_telemetry

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "CoordinatorInstruments",
    "FeedbackInstruments",
    "HttpServerMetrics",
    "Instruments",
    "RetentionInstruments",
    "ServiceInstruments",
    "SinkInstruments",
    "Telemetry",
    "TransportInstruments",
    "build_telemetry",
]
