"""The Litestar app: its factory, the plugins that put the service (``ServicePlugin``)
and Litestar's fixes (``FrameworkFixes``) into it, the controllers, problem bodies."""

from .app import create_app
from .plugin import ServicePlugin

__all__ = ["ServicePlugin", "create_app"]
