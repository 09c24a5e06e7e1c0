"""OpenTelemetry instruments of the service (exported to Prometheus at /metrics)."""

from .instruments import CoordinatorInstruments

__all__ = ["CoordinatorInstruments"]
