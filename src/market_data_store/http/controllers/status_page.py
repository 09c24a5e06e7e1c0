"""``GET /``: a live status page of every coordinator's backpressure (no build, no CDN)."""

from __future__ import annotations

from pathlib import Path

from litestar import Controller, MediaType, get
from litestar.response.base import ASGIResponse

PAGE = (Path(__file__).parents[1] / "status_page.html").read_bytes()


class StatusPageController(Controller):
    tags = ["feedback"]

    @get(
        "/",
        summary="Live status page",
        description="One HTML page following /v1/feedback/stream: level, queue use, last event.",
        media_type=MediaType.HTML,
        sync_to_thread=False,
    )
    def page(self) -> ASGIResponse:
        return ASGIResponse(
            body=PAGE,
            media_type=MediaType.HTML,
            headers={
                "cache-control": "no-cache",
                "content-security-policy": (
                    "default-src 'none'; script-src 'unsafe-inline'; "
                    "style-src 'unsafe-inline'; connect-src 'self'"
                ),
            },
        )
