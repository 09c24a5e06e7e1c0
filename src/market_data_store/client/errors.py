"""What the producer client raises. Every error derives from ``StoreClientError``.

A batch the client could not get stored is reported as a ``BatchFailedError``
carrying its bars (plain dicts, ready to ``write`` again): the client never
drops bars silently. Resending is always safe: the store's writes are
idempotent per bar key (provider, symbol, resolution, ts).
"""

from __future__ import annotations

from typing import Any


class StoreClientError(Exception):
    """Base of every error raised by ``market_data_store.client``."""


class InvalidBarError(StoreClientError, ValueError):
    """A bar cannot be sent as given (wrong type, naive datetime, missing field).

    Raised by ``write`` before anything of that call was buffered. ``index`` is
    the bar's position in the call, ``field`` the offending field (``$``: the
    bar itself). Rules that need the store (price order, ranges) are checked by
    the store: they come back as ``BarsRejectedError``.
    """

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(f"bar {index}: {field}: {message}")
        self.index = index
        self.field = field
        self.message = message


class ClientClosedError(StoreClientError, RuntimeError):
    """``write`` after ``aclose`` began: nothing of the call was buffered."""


class BatchFailedError(StoreClientError):
    """A batch is not known to be stored; ``bars`` are its bars as plain dicts, in
    the order written (valid input to ``write``)."""

    def __init__(self, message: str, bars: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.bars = bars


class BarsRejectedError(BatchFailedError):
    """The store refused the batch with a 4xx problem: bad bars (422, ``errors``
    lists ``{index, field, message}`` with ``index`` into ``bars``), a bar too large
    for any request (413), a bad provider, ...

    Never retried: sending the same again cannot succeed. Nothing of the batch
    was stored (the store takes a request whole or not at all). ``problem`` is
    the RFC 9457 body as received.
    """

    def __init__(self, status: int, problem: dict[str, Any], bars: list[dict[str, Any]]) -> None:
        detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        errors = problem.get("errors")
        self.errors: list[dict[str, Any]] = (
            [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        )
        shown = "; ".join(
            f"bar {e.get('index')}: {e.get('field')}: {e.get('message')}" for e in self.errors[:3]
        )
        more = f" (+{len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
        text = f"store refused {len(bars)} bar(s) with HTTP {status}: {detail}"
        super().__init__(f"{text} [{shown}{more}]" if shown else text, bars)
        self.status = status
        self.problem = problem


class DeadlineExceededError(BatchFailedError):
    """The store did not confirm the batch within its deadline (it kept refusing with
    503, was unreachable, or asked to wait longer than the deadline leaves), or the
    client was closed before it did.

    The batch may or may not have been stored; writing ``bars`` again is safe.
    ``attempts`` counts the requests made, ``last_error`` says what the last one met.
    """

    def __init__(
        self, message: str, bars: list[dict[str, Any]], *, attempts: int, last_error: str | None
    ) -> None:
        super().__init__(message, bars)
        self.attempts = attempts
        self.last_error = last_error


class ReadFailedError(StoreClientError):
    """A read (``read_bars``, ``latest``) ended without its answer: the store refused it
    with a 4xx problem (a bad query, a 401 without the tenant's token), answered
    something that is not the store's (a proxy's page, a wrong ``base_url``), or could
    not be reached, or kept refusing (503), for ``deadline`` s since the last bar
    arrived.

    What a ``read_bars`` yielded before it stands: every bar of the range up to the
    last one yielded, in order, none twice (``received`` counts them). ``status`` is
    the last answer's HTTP status (None: no answer), ``problem`` its RFC 9457 body as
    received, ``attempts`` the requests made, ``last_error`` what the last one met.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: dict[str, Any] | None = None,
        attempts: int = 1,
        last_error: str | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem: dict[str, Any] = problem if problem is not None else {}
        self.attempts = attempts
        self.last_error = last_error
        self.received = received


__all__ = [
    "BarsRejectedError",
    "BatchFailedError",
    "ClientClosedError",
    "DeadlineExceededError",
    "InvalidBarError",
    "ReadFailedError",
    "StoreClientError",
]


class BarsDeadLetteredError(BatchFailedError):
    """The store answered a request as committed (201), but its database refused some
    of its bars: they are in the store's dead-letter queue (``/admin/dlq``), with the
    database's reason, not in the table. ``bars`` are exactly those bars; every other
    bar of the request is committed. ``indices`` are their positions in the request
    (None when the store did not say which: then ``bars`` is the whole request, and
    some of it may be stored). A key sent twice in one request is one row: when the
    database refuses it, both bars come back (neither is stored)."""

    def __init__(self, bars: list[dict[str, Any]], indices: list[int] | None) -> None:
        which = "" if indices is not None else " (the store did not say which: all handed back)"
        super().__init__(
            f"the store's database refused {len(bars)} bar(s); they are dead-lettered{which}",
            bars,
        )
        self.indices = indices
