"""One controller per route group."""

from .admin import AdminController
from .health import HealthController
from .metrics import MetricsController

__all__ = ["AdminController", "HealthController", "MetricsController"]
