"""Kubernetes probes: /healthz (liveness) and /readyz (readiness)."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from ..health import HealthReport, HealthSources


class HealthController(Controller):
    tags = ["health"]

    @get(
        ["/healthz", "/health"],
        summary="Liveness",
        description="200 while the process runs; state `degraded` when a dependency fails.",
        sync_to_thread=False,
    )
    def liveness(self, health_sources: NamedDependency[HealthSources]) -> HealthReport:
        return health_sources.liveness()

    @get(
        "/readyz",
        summary="Readiness",
        description=(
            "200 when ready; 503 (same body, state `unhealthy`) when the database is "
            "unreachable, the circuit breaker is open or the service is shutting down."
        ),
        sync_to_thread=False,
        responses={503: ResponseSpec(data_container=HealthReport, description="Not ready")},
    )
    def readiness(self, health_sources: NamedDependency[HealthSources]) -> Response[HealthReport]:
        report = health_sources.readiness()
        return Response(report, status_code=200 if report.ok else 503)
