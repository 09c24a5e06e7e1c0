"""One controller per route group."""

from .admin import AdminController
from .bars import BarsController
from .dead_letters import DeadLetterController
from .facts import fact_routers
from .feedback import FeedbackStateController, FeedbackStreamController
from .health import HealthController
from .metrics import MetricsController
from .retention import RetentionController
from .status_page import StatusPageController

__all__ = [
    "AdminController",
    "BarsController",
    "DeadLetterController",
    "FeedbackStateController",
    "FeedbackStreamController",
    "HealthController",
    "MetricsController",
    "RetentionController",
    "StatusPageController",
    "fact_routers",
]
