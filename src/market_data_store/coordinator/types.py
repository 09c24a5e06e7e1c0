"""Small shared types of the coordinator: the sink protocol and its errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

OverflowStrategy = Literal["block", "drop_oldest", "error"]
OVERFLOW_STRATEGIES: tuple[OverflowStrategy, ...] = ("block", "drop_oldest", "error")

BackpressureCallback = Callable[[], Awaitable[None]]
"""Called without arguments when the high watermark is reached / the queue recovers."""

DropCallback = Callable[[T], Awaitable[None]]


@runtime_checkable
class Sink(Protocol[T_contra]):
    """Where batches end up.

    ``write`` must be all-or-nothing (or idempotent): a batch that raised is
    retried or split and written again, so a half-applied batch must not leave
    duplicates behind.
    """

    async def write(self, batch: Sequence[T_contra]) -> None: ...


class Stoppable(Protocol):
    """Anything with an awaitable ``stop()`` (the original library's name, kept)."""

    async def stop(self) -> None: ...


class QueueFullError(RuntimeError):
    """The queue has no room: strategy ``error``, or ``block`` past its timeout.
    Nothing of the refused call was enqueued. A ``RuntimeError``, as in the original
    library, so an ``except RuntimeError`` written for it still catches it."""


class QueueClosedError(RuntimeError):
    """The queue (or its coordinator) is stopping and accepts no more items."""
