"""The application factory: ``create_app(settings) -> Litestar``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from litestar import Controller, Litestar, Router
from litestar.di import Provide
from litestar.exceptions import MethodNotAllowedException
from litestar.utils import normalize_path

from market_data_store import __version__
from market_data_store.config import Settings, check_admin_token
from market_data_store.service import Lifecycle
from market_data_store.telemetry import HttpServerMetrics, build_telemetry

from .controllers import (
    AdminController,
    BarsController,
    DeadLetterController,
    FeedbackStateController,
    FeedbackStreamController,
    HealthController,
    MetricsController,
    RetentionController,
    StatusPageController,
    fact_routers,
)
from .framework import FrameworkFixes, openapi_without_null
from .openapi import describe_bars_cap, openapi_config
from .plugin import ServicePlugin
from .probes import ProbeFastPath
from .problems import EXCEPTION_HANDLERS


def check_startup_safety(settings: Settings) -> None:
    """Refuse an admin token unfit for ``settings.env`` (the default or a short one in
    production; not printable ASCII anywhere): the rule lives in ``config``."""
    check_admin_token(settings)


_ROUTABLE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def create_app(
    settings: Settings, *, dependencies: Mapping[str, Provide] | None = None
) -> Litestar:
    """Build the service (its components are built when the app starts: ``ServicePlugin``).
    ``dependencies`` replaces providers by name (tests)."""
    check_startup_safety(settings)
    telemetry = build_telemetry(__version__)
    service = ServicePlugin(settings, lifecycle=Lifecycle(), telemetry=telemetry)
    handlers: list[type[Controller] | Router] = [
        HealthController,
        BarsController,
        *fact_routers(),
        FeedbackStateController,
        AdminController,
        DeadLetterController,
        RetentionController,
        MetricsController,
    ]
    if settings.feedback.sse.enabled:
        handlers += [FeedbackStreamController, StatusPageController]
    app = Litestar(
        route_handlers=handlers,
        plugins=[service, FrameworkFixes()],
        dependencies=dict(dependencies or {}),
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,  # the process (CLI, uvicorn, tests) owns logging
        request_max_body_size=settings.ingest.max_body_bytes,
        openapi_config=openapi_config(),
    )
    openapi_without_null(app)  # built once, here (and read by nothing before)
    describe_bars_cap(app, settings.ingest.max_bars_per_request)
    app.on_startup.append(partial(describe_bars_cap, max_bars=settings.ingest.max_bars_per_request))
    # Measure every request, routed or not (404/405 too): wrap the whole ASGI
    # handler, as Litestar's own OpenTelemetry plugin does.
    # Probes are answered before Litestar (same bytes, a fraction of the cost): see probes.py.
    # (Not when a caller replaced the health_sources provider: the routes then answer.)
    inner = app.asgi_handler
    if "health_sources" not in (dependencies or {}):
        inner = ProbeFastPath(inner, service)
    app.asgi_handler = HttpServerMetrics(
        inner,
        telemetry.http_duration,
        route_of_405=_route_template_of(app),
    )
    return app


def _route_template_of(app: Litestar) -> Callable[[Any], str | None]:
    """The route template of a request the router answered 405: the path matched a
    route, the method did not, so Litestar set no ``path_template``; route it again
    with a method the route has (the lookup is cached)."""

    def route_of_405(scope: Any) -> str | None:
        path = scope["path"]
        if root_path := scope.get("root_path", ""):
            path = path.split(root_path, maxsplit=1)[-1]
        path = normalize_path(path)
        for method in _ROUTABLE_METHODS:
            try:
                template: str = app.asgi_router.handle_routing(path=path, method=method)[4]
            except MethodNotAllowedException:
                continue
            except Exception:  # no route after all (404, bad path parameters)
                return None
            return template
        return None

    return route_of_405
