"""The Litestar service: app factory, lifespan, dependencies, controllers."""

from .app import create_app
from .lifecycle import Lifecycle

__all__ = ["Lifecycle", "create_app"]
