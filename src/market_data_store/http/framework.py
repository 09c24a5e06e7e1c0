"""What Litestar 2 gets wrong for this service, fixed for every route in one plugin:

- ``OPTIONS`` answers ``Allow`` with every method of its path (``allow``);
- a scalar query parameter given twice, or given as ``null``, is a 400 (``query_params``);
- no ``null`` in the OpenAPI document's parameter schemas (``openapi``).

Each fix raises at start-up if Litestar changed what it relies on; none costs a
request more than the ``before_request`` hook's one test of the query string.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin, ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute

from .allow import point_options_at_route
from .openapi import parameters_never_null, retry_after_declared
from .query_params import ScalarQueryCheck


class FrameworkFixes(InitPlugin, ReceiveRoutePlugin):
    """Add to ``Litestar(plugins=[...])``; it owns the app's ``before_request`` hook."""

    def __init__(self) -> None:
        self._query_check = ScalarQueryCheck()

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        if app_config.before_request is not None:
            raise RuntimeError("FrameworkFixes owns before_request; the app set one already")
        app_config.before_request = self._query_check
        app_config.on_startup.append(openapi_without_null)
        return app_config

    def receive_route(self, route: BaseRoute) -> None:
        if isinstance(route, HTTPRoute):
            point_options_at_route(route)  # OPTIONS /v1/bars: Allow: GET, OPTIONS, POST
            self._query_check.add_route(route)  # ?limit=1&limit=2 -> 400


def openapi_without_null(app: Litestar) -> None:
    """Build the document now, without ``null`` in parameter schemas: ``create_app`` calls
    it once its routes exist; the plugin again when the app starts (a route registered
    in between makes Litestar build the document anew). Fixing it twice is harmless.
    Every 503 problem declares its ``Retry-After`` too."""
    if app.openapi_config is not None:
        parameters_never_null(app.openapi_schema)
        retry_after_declared(app.openapi_schema)


__all__ = ["FrameworkFixes", "openapi_without_null"]
