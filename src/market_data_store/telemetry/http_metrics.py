"""``http.server.request.duration`` per the stable OpenTelemetry HTTP semantic conventions.

Wraps the app's ASGI handler (outside routing, so 404s and 405s are measured
too) and labels each request by its route *template* (``/v1/bars/{symbol}``),
read from the scope after the router filled it in, never by the raw path:
raw paths would make one time series per URL.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.metrics import Meter

ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                            "TRACE", "PATCH"})  # fmt: skip
_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]


class HttpServerMetrics:
    def __init__(self, app: ASGIApp, meter: Meter) -> None:
        self.app = app
        self.duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "_OTHER"
            attributes: dict[str, str | int] = {
                "http.request.method": method,
                "http.response.status_code": status,
                "url.scheme": scope.get("scheme", "http"),
            }
            route = scope.get("path_template")
            if route:
                attributes["http.route"] = route
            if status >= 500:
                attributes["error.type"] = str(status)
            self.duration.record(time.perf_counter() - started, attributes)
