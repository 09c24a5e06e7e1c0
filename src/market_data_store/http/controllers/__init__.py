"""One controller per route group."""

from .admin import AdminController
from .bars import BarsController
from .dead_letters import DeadLetterController
from .health import HealthController
from .metrics import MetricsController

__all__ = [
    "AdminController",
    "BarsController",
    "DeadLetterController",
    "HealthController",
    "MetricsController",
]
