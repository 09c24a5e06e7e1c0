"""Waiting for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

DEFAULT_TIMEOUT = 10.0
"""Seconds a wait lasts unless told: generous, a wait that holds returns at once."""


async def until(
    check: Callable[[], object] | Callable[[], Awaitable[object]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "",
    interval: float = 0.02,
) -> float:
    """Poll ``check`` (sync or async) every ``interval`` s until it returns a true
    value; the seconds that took. Fails (``AssertionError`` naming ``what`` and the
    timeout) when it still does not hold after ``timeout`` s."""
    started = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"{what or _name(check)}: not within {timeout} s")
        await asyncio.sleep(interval)


def until_sync(
    check: Callable[[], object],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "",
    interval: float = 0.05,
) -> float:
    """``until`` for plain threads: blocks, polling ``check`` every ``interval`` s."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"{what or _name(check)}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


def _name(check: Callable[..., object]) -> str:
    name = getattr(check, "__qualname__", repr(check))
    return "condition" if name == "<lambda>" else name
