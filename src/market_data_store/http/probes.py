"""The probes answered before Litestar: ``GET``/``HEAD`` of ``/healthz``, ``/health``
and ``/readyz``.

A kubelet asks every few seconds, and a probe's body is pre-rendered bytes
(``HealthSources.render``): what it costs is the framework around it - routing,
the ``before_request`` hook, dependency resolution, the response object - which
took a probe to about 0.75 of a bare Litestar app's trivial route
(``bench/health.py``). ``ProbeFastPath`` sits outside Litestar (inside the HTTP
metrics, so every probe is still measured, labelled with its route) and sends the
same status, headers and body the ``HealthController`` routes would; every other
request, and any probe before the lifespan built its health sources, goes on to
Litestar unchanged. The controller keeps the routes for the OpenAPI document, for
their other methods (``OPTIONS``; 405 with ``Allow``) and as that fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from market_data_store.service import Components

if TYPE_CHECKING:
    from .plugin import ServicePlugin

ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]

PROBES: dict[str, Literal["liveness", "readiness"]] = {
    "/healthz": "liveness",
    "/health": "liveness",
    "/readyz": "readiness",
}
_CONTENT_TYPE = (b"content-type", b"application/json")


class ProbeFastPath:
    def __init__(self, app: ASGIApp, service: ServicePlugin) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        probe = PROBES.get(scope["path"]) if scope["type"] == "http" else None
        running: Components | None = self.service.started
        method = scope.get("method")
        if probe is None or running is None or method not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        scope["path_template"] = scope["path"]  # the metrics' http.route
        body, ok = running.health_sources.render(probe)
        status = 503 if probe == "readiness" and not ok else 200
        headers = [_CONTENT_TYPE, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


__all__ = ["PROBES", "ProbeFastPath"]
