"""Prometheus scrape endpoint, fed by the OpenTelemetry SDK."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency

from market_data_store.telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry


class MetricsController(Controller):
    tags = ["observability"]

    @get(
        "/metrics",
        summary="Prometheus exposition (text 0.0.4, or OpenMetrics when the scraper asks)",
        media_type=PROMETHEUS_CONTENT_TYPE,
        sync_to_thread=False,
    )
    def metrics(
        self, request: Request[Any, Any, Any], telemetry: NamedDependency[Telemetry]
    ) -> Response[bytes]:
        body, content_type = telemetry.exposition(request.headers.get("accept", ""))
        # Set the header ourselves: the format's content type already names its charset.
        return Response(body, headers={"content-type": content_type})
