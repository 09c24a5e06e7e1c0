"""The application factory: ``create_app(settings) -> Litestar``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from litestar import Controller, Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import MethodNotAllowedException
from litestar.utils import normalize_path

from market_data_store import __version__
from market_data_store.config import Settings, check_admin_token
from market_data_store.ingest import BarDecoder
from market_data_store.telemetry import (
    CoordinatorInstruments,
    FeedbackInstruments,
    HttpServerMetrics,
    ServiceInstruments,
    SinkInstruments,
    TransportInstruments,
    build_telemetry,
)

from .allow import point_options_at_routes
from .controllers import (
    AdminController,
    BarsController,
    DeadLetterController,
    FeedbackStateController,
    FeedbackStreamController,
    HealthController,
    MetricsController,
    StatusPageController,
)
from .dependencies import build_dependencies
from .lifecycle import Lifecycle
from .lifespan import service_lifespan
from .openapi import openapi_config, parameters_never_null
from .probes import ProbeFastPath
from .problems import EXCEPTION_HANDLERS
from .query_params import ScalarQueryCheck


def check_startup_safety(settings: Settings) -> None:
    """Refuse an admin token unfit for ``settings.env`` (the default or a short one in
    production; not printable ASCII anywhere): the rule lives in ``config``."""
    check_admin_token(settings)


_ROUTABLE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def create_app(
    settings: Settings, *, dependencies: Mapping[str, Provide] | None = None
) -> Litestar:
    """Build the service. ``dependencies`` replaces providers by key (tests)."""
    check_startup_safety(settings)
    telemetry = build_telemetry(__version__)
    lifecycle = Lifecycle()
    state = State(
        {
            "settings": settings,
            "lifecycle": lifecycle,
            "bar_decoder": BarDecoder(),  # one per app: its clock, caches, decode gate
            # set when shutdown starts (SIGTERM): long-lived responses end on it
            "shutdown_event": lifecycle.shutdown_event,
            "telemetry": telemetry,
            "coordinator_instruments": CoordinatorInstruments(telemetry.meter),
            "sink_instruments": SinkInstruments(telemetry.meter),
            "feedback_instruments": FeedbackInstruments(telemetry.meter),
            "service_instruments": ServiceInstruments(telemetry.meter),
            # the server (server.build_server) hands it its connection guard's counts
            "transport_instruments": TransportInstruments(telemetry.meter),
        }
    )
    handlers: list[type[Controller]] = [
        HealthController,
        BarsController,
        FeedbackStateController,
        AdminController,
        DeadLetterController,
        MetricsController,
    ]
    if settings.feedback.sse.enabled:
        handlers += [FeedbackStreamController, StatusPageController]
    scalar_query_check = ScalarQueryCheck()  # ?limit=1&limit=2 -> 400, on every route
    app = Litestar(
        route_handlers=handlers,
        before_request=scalar_query_check,
        lifespan=[service_lifespan],
        dependencies={**build_dependencies(state), **(dependencies or {})},
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,  # the process (CLI, uvicorn, tests) owns logging
        request_max_body_size=settings.ingest.max_body_bytes,
        state=state,
        openapi_config=openapi_config(),
    )
    scalar_query_check.bind(app)
    point_options_at_routes(app)  # OPTIONS /v1/bars: Allow: GET, OPTIONS, POST
    parameters_never_null(app.openapi_schema)  # built once, here
    # Measure every request, routed or not (404/405 too): wrap the whole ASGI
    # handler, as Litestar's own OpenTelemetry plugin does.
    # Probes are answered before Litestar (same bytes, a fraction of the cost): see probes.py.
    # (Not when a caller replaced the health_sources provider: the routes then answer.)
    inner = app.asgi_handler
    if "health_sources" not in (dependencies or {}):
        inner = ProbeFastPath(inner, app.state)
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
