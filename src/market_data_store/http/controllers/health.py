"""Kubernetes probes: /healthz (liveness) and /readyz (readiness)."""

from __future__ import annotations

from litestar import Controller, HttpMethod, MediaType, Response, get, route
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.response.base import ASGIResponse

from market_data_store.service import HealthReport, HealthSources

from ..guards import admin_token_guard
from ..problems import problem_responses


class HealthController(Controller):
    """Bodies are pre-rendered ``HealthReport`` JSON (see ``HealthSources.render``),
    sent as a bare ``ASGIResponse``: the cheapest response Litestar has, so a
    probe costs about what a trivial route does."""

    tags = ["health"]

    # HEAD (some probes and load balancers use it) answers like GET: the server
    # (uvicorn) sends the status and headers, Content-Length included, and drops the body.
    @route(
        ["/healthz", "/health"],
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        summary="Liveness",
        description="200 while the process runs; state `degraded` when a dependency fails.",
        sync_to_thread=False,
        responses={200: ResponseSpec(data_container=HealthReport, description="Alive")},
    )
    def liveness(self, health_sources: NamedDependency[HealthSources]) -> ASGIResponse:
        body, _ = health_sources.render("liveness")
        return ASGIResponse(body=body, media_type=MediaType.JSON)

    @route(
        "/readyz",
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        summary="Readiness",
        description=(
            "200 when ready; 503 (same body, state `unhealthy`) when the database is "
            "unreachable, the circuit breaker is not closed (open, or half-open until its "
            "trial write succeeds) or the service is shutting down."
        ),
        sync_to_thread=False,
        responses={
            200: ResponseSpec(data_container=HealthReport, description="Ready"),
            503: ResponseSpec(data_container=HealthReport, description="Not ready"),
        },
    )
    def readiness(self, health_sources: NamedDependency[HealthSources]) -> ASGIResponse:
        body, ready = health_sources.render("readiness")
        return ASGIResponse(body=body, media_type=MediaType.JSON, status_code=200 if ready else 503)

    @get(
        "/admin/health",
        summary="Readiness with error details",
        description=(
            "The readiness report (same status codes) where a failing database or Redis "
            "also shows `detail`/`redis_error_detail`: the driver's own words, which may "
            "name hosts, users or databases, so they stay out of the public probes (those "
            "show a one-word category in `error`/`redis_error`)."
        ),
        guards=[admin_token_guard],
        security=[{"BearerToken": []}],
        tags=["admin"],
        sync_to_thread=False,
        responses={
            200: ResponseSpec(data_container=HealthReport, description="Ready"),
            503: ResponseSpec(data_container=HealthReport, description="Not ready"),
            **problem_responses(s401="No or wrong admin bearer token"),
        },
    )
    def detailed(self, health_sources: NamedDependency[HealthSources]) -> Response[HealthReport]:
        report = health_sources.readiness(detail=True)
        return Response(report, status_code=200 if report.ok else 503)
