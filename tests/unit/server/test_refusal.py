"""server/refusal.py: the bytes of the transport's own refusals (the body built by
``http.problems.problem_body``, as every problem of the service)."""

from __future__ import annotations

from market_data_store.server.refusal import problem_response


def test_a_refusal_is_a_complete_closing_problem_response() -> None:
    body = (
        b'{"type": "about:blank", "title": "Request Timeout", "status": 408, '
        b'"detail": "request headers not complete within 10 s", "instance": "/v1/bars"}'
    )
    assert problem_response(
        408, "request headers not complete within 10 s", instance="/v1/bars"
    ) == (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )


def test_retry_after_is_a_member_and_a_header_after_the_others() -> None:
    body = (
        b'{"type": "about:blank", "title": "Service Unavailable", "status": 503, '
        b'"detail": "d", "instance": "", "retry_after": 3}'
    )
    assert problem_response(503, "d", {"x-a": "1"}, retry_after=3) == (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
        b"content-length: %d\r\nconnection: close\r\nx-a: 1\r\nretry-after: 3\r\n\r\n%s"
        % (len(body), body)
    )
