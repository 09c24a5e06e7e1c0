"""Nothing on a request's path runs in a worker thread by accident.

Litestar runs a synchronous hook, guard or dependency in anyio's thread pool:
a thread hop per request. The service's ``before_request`` hook was synchronous
once, and cost every route about 0.3 ms (the service's trivial route went from
~60 to ~330 microseconds in process)."""

from __future__ import annotations

from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.utils.sync import AsyncCallable

from market_data_store.config import load_settings
from market_data_store.http import create_app


def test_hooks_guards_and_dependencies_run_on_the_event_loop() -> None:
    app = create_app(load_settings({}))
    handlers = [
        handler
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler, _ in route.route_handler_map.values()
    ]
    assert handlers
    for hook in (app.before_request, app.after_request, app.after_response):
        assert hook is None or not isinstance(hook, AsyncCallable), hook
    for handler in handlers:
        assert isinstance(handler, HTTPRouteHandler)
        name = handler.handler_name
        for guard in handler.resolve_guards():
            assert not isinstance(guard, AsyncCallable), (name, guard)
        hook = handler.resolve_before_request()
        assert hook is None or not isinstance(hook, AsyncCallable), (name, hook)
        for key, provider in handler.resolve_dependencies().items():
            assert not (provider.has_sync_callable and provider.sync_to_thread), (name, key)
        if handler.has_sync_callable:
            assert handler.sync_to_thread is False, name


def test_write_routes_resolve_one_dependency_without_a_task_group() -> None:
    """Litestar resolves two or more dependencies of a handler concurrently, in an anyio
    task group (a task each): on ``POST /v1/bars`` that was about a fifth of a small
    request's CPU in the service (0.27 -> 0.21 ms for a 1-bar body, measured from
    ``/proc``). The write routes take ``Ingest``, which carries the decoders."""
    app = create_app(load_settings({}))
    writes = [
        (route.path, handler)
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith("/v1/")
        for method, (handler, _) in route.route_handler_map.items()
        if method == "POST" and handler.handler_name.startswith("ingest")
    ]
    assert {path for path, _ in writes} >= {
        "/v1/bars",
        "/v1/options",
        "/v1/quotes",
        "/v1/trades",
        "/v1/fundamentals",
        "/v1/news",
    }
    for path, handler in writes:
        assert isinstance(handler, HTTPRouteHandler)
        provided = handler.resolve_dependencies()
        used = [name for name in handler.parsed_fn_signature.parameters if name in provided]
        assert used == ["ingest"], (path, used)
