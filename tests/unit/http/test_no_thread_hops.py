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
