"""What a refused body raises, and the per-field errors a 422 lists."""

from __future__ import annotations

import msgspec

MAX_REPORTED_ERRORS = 100


class BarError(msgspec.Struct, omit_defaults=True):
    index: int | None
    field: str
    message: str


class IngestError(Exception):
    """A body refused whole: nothing of it becomes a row."""


class InvalidBodyError(IngestError):
    """Bad bars (422): the first ``MAX_REPORTED_ERRORS`` errors found, in order, and
    how many there are in all (``total``)."""

    def __init__(self, errors: list[BarError], total: int | None = None) -> None:
        self.total = len(errors) if total is None else total
        super().__init__(f"{self.total} invalid field(s)")
        self.errors = errors[:MAX_REPORTED_ERRORS]


class MalformedBodyError(IngestError):
    """Not parseable as the declared content type at all (400)."""


class TooManyBarsError(IngestError):
    """More bars than one request may carry, or a body larger than they may be (413)."""


class Errors:
    """Errors in order: the first ``MAX_REPORTED_ERRORS`` kept, the rest only counted."""

    def __init__(self) -> None:
        self.kept: list[BarError] = []
        self.total = 0

    def add(self, index: int | None, field: str, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_ERRORS:
            self.kept.append(BarError(index, field, message))

    def __bool__(self) -> bool:
        return self.total > 0
