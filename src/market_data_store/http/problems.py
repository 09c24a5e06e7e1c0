"""Errors as RFC 9457 problem details (``application/problem+json``), mapped here only.

Controllers raise (an ``HTTPException`` with ``extra`` members, or a domain error
such as ``DatabaseUnavailableError``); the handlers below turn every one of them
into the same body: ``type``, ``title``, ``status``, ``detail``, ``instance``
(the request path), plus the documented extension members of ``ProblemBody``.
Client mistakes get a 4xx saying what was wrong; a database that cannot be used
a 503 with ``Retry-After``; anything unexpected is logged and answered with a 500
problem, never an HTML page or a stack trace.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.response.base import ASGIResponse

from market_data_store._util import ThrottledLog
from market_data_store.storage import DatabaseUnavailableError, InvalidQueryError

log = logging.getLogger(__name__)
_database_log = ThrottledLog(log)  # an outage fails every request: say so once per 10 s

PROBLEM_JSON = "application/problem+json"
DATABASE_RETRY_AFTER = 5
"""Seconds a client is told to wait when the database cannot be used right now."""
DATABASE_MISCONFIGURED_RETRY_AFTER = 60
"""... and when it refuses the service's credentials or database (an operator must act)."""


# RFC 9110's reason phrases where Python 3.11's ``HTTPStatus`` still has RFC 7231's
# (Python 3.13 renamed these four); every other status of the service has the same phrase.
_RFC9110_PHRASES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}


def reason_phrase(status: int) -> str:
    """RFC 9110's reason phrase of ``status``: the ``title`` of its problems and the
    phrase of the transport's status lines."""
    return _RFC9110_PHRASES.get(status) or HTTPStatus(status).phrase


class ProblemItem(msgspec.Struct, omit_defaults=True):
    """One of several mistakes of a request."""

    message: str
    index: int | msgspec.UnsetType | None = msgspec.UNSET  # the bar, in a request body
    field: str | msgspec.UnsetType = msgspec.UNSET  # the bar's field (or provider, bars)
    key: str | msgspec.UnsetType = msgspec.UNSET  # the query parameter or header
    source: str | msgspec.UnsetType = msgspec.UNSET  # where ``key`` was: query, header...


class ProblemBody(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details: every error this service answers has this shape."""

    type: str  # always "about:blank": ``title`` is the status phrase
    title: str
    status: int
    detail: str
    instance: str  # the request path
    errors: list[ProblemItem] | msgspec.UnsetType = msgspec.UNSET  # 400, 422: every mistake
    more_errors: int | msgspec.UnsetType = msgspec.UNSET  # 422: mistakes not listed
    retry_after: int | msgspec.UnsetType = msgspec.UNSET  # 503: seconds, as the header
    reason: str | msgspec.UnsetType = msgspec.UNSET  # 503 of the stream: why it was refused
    # 503 of POST /v1/bars: the coordinator's current FeedbackEvent (as /v1/feedback/state)
    feedback: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


def problem_responses(**descriptions: str) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses`` for error statuses: ``problem_responses(s404="...")``."""
    return {
        int(key.lstrip("s")): ResponseSpec(
            data_container=ProblemBody,
            media_type=PROBLEM_JSON,
            description=text,
            generate_examples=False,
        )
        for key, text in descriptions.items()
    }


class ProblemResponse(Response[dict[str, Any]]):
    """A problem body; ``instance`` is filled in from the request it answers."""

    def to_asgi_response(
        self, app: Any, request: Request[Any, Any, Any], **kwargs: Any
    ) -> ASGIResponse:
        if isinstance(self.content, dict):
            self.content.setdefault("instance", request.url.path)
        return super().to_asgi_response(app, request, **kwargs)


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    instance: str | None,
    title: str | None = None,
    type_: str = "about:blank",
    **extensions: Any,
) -> dict[str, Any]:
    """The members of a problem, in this order: ``type``, ``title`` (RFC 9110's status
    phrase unless given), ``status``, ``detail`` (the title unless given),
    ``instance`` (left out when None), then ``extensions``. The one builder of the
    body: also used by the transport's own refusals (``server.refusal``)."""
    phrase = reason_phrase(status)
    body: dict[str, Any] = {
        "type": type_,
        "title": title or phrase,
        "status": status,
        "detail": detail or title or phrase,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return body


def problem(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    instance: str | None = None,
    **extensions: Any,
) -> Response[dict[str, Any]]:
    body = problem_body(status, detail, instance=instance, title=title, type_=type_, **extensions)
    return ProblemResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    extensions: dict[str, Any] = {}
    if isinstance(exc, ValidationException) and exc.extra:
        extensions["errors"] = exc.extra
    elif isinstance(exc.extra, dict):
        extensions.update(exc.extra)
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", "Bearer")
    if exc.status_code == 503 and "Retry-After" not in headers:
        headers["Retry-After"] = str(extensions.setdefault("retry_after", DATABASE_RETRY_AFTER))
    return problem(
        exc.status_code,
        exc.detail,
        headers=headers or None,
        instance=request.url.path,
        **extensions,
    )


def _database_unavailable(
    request: Request[Any, Any, Any], exc: DatabaseUnavailableError
) -> Response[Any]:
    if exc.permanent:
        _database_log.log(logging.ERROR, "permanent", "requests answered 503: %s", exc)
        retry_after = DATABASE_MISCONFIGURED_RETRY_AFTER
    else:
        _database_log.log(logging.WARNING, "unavailable", "requests answered 503: %s", exc)
        retry_after = DATABASE_RETRY_AFTER
    return problem(
        503,
        "the database is not available right now (or too busy); retry later",
        headers={"Retry-After": str(retry_after)},
        instance=request.url.path,
        retry_after=retry_after,
    )


def _invalid_query(request: Request[Any, Any, Any], exc: InvalidQueryError) -> Response[Any]:
    return problem(400, f"invalid query parameters: {exc}", instance=request.url.path)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "internal error; it has been logged", instance=request.url.path)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    HTTPException: _http_exception,
    DatabaseUnavailableError: _database_unavailable,
    InvalidQueryError: _invalid_query,
    Exception: _unexpected,
}

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_JSON",
    "ProblemBody",
    "ProblemItem",
    "problem",
    "problem_body",
    "problem_responses",
    "reason_phrase",
]
