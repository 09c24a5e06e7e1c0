"""The service assembled: ``components(settings)`` builds and tears down every part in
order (database, feedback delivery, monitor, write path), from small context managers
per concern that the CLI (and tests, or an embedding process) use without HTTP.
No Litestar here: ``http.plugin`` hands the components to the app."""

from .components import Components, components
from .database import Database, StartupError, migrate, open_database
from .delivery import feedback_delivery
from .health import HealthReport, HealthSources
from .lifecycle import Lifecycle
from .tenants import Tenants
from .write_path import BARS, build_coordinator, write_path

__all__ = [
    "BARS",
    "Components",
    "Database",
    "HealthReport",
    "HealthSources",
    "Lifecycle",
    "StartupError",
    "Tenants",
    "build_coordinator",
    "components",
    "feedback_delivery",
    "migrate",
    "open_database",
    "write_path",
]
