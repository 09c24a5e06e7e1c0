"""The status page (GET /) in a real browser: headless Chromium against the real service.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on file descriptors 3 and 4), so no port and no extra package. A
``--dump-dom`` with ``--virtual-time-budget`` is no use here: virtual time does not
advance while a request is pending, and the page's event stream never ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from market_data_store.coordinator import BackpressureLevel, FeedbackBus, FeedbackEvent
from market_data_store.feedback import FeedbackFanout
from tests.support.postgres import REQUIRE_SERVICES
from tests.support.service import RunningService, running_service, service_settings
from tests.support.tcp_proxy import TcpProxy

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
WAIT = 10.0  # seconds any one thing may take in the browser


def find_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = "chromium is not installed (apt-get install chromium)"
    if REQUIRE_SERVICES:
        pytest.fail(f"MDS_TEST_REQUIRE_SERVICES=1 but {why}")
    pytest.skip(why)


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium and one page, over the DevTools protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._session: str | None = None
        self._reader: asyncio.StreamReader
        self._writer: asyncio.WriteTransport
        self._task: asyncio.Task[None]

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, chromium: str, profile: Path) -> AsyncIterator[Browser]:
        # Chromium reads commands from fd 3 and writes answers to fd 4. Ours are
        # moved above 9 first, so the renumbering below cannot overwrite one of them.
        to_chrome = [_high(fd) for fd in os.pipe()]
        from_chrome = [_high(fd) for fd in os.pipe()]
        log = profile.with_suffix(".log")
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{to_chrome[0]} 4>&{from_chrome[1]}'
                f" {to_chrome[0]}<&- {from_chrome[1]}>&-",
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(to_chrome[0], from_chrome[1]),
                start_new_session=True,  # its own process group: every helper ends with it
            )
        os.close(to_chrome[0])
        os.close(from_chrome[1])
        browser = cls(proc, log)
        loop = asyncio.get_running_loop()
        try:
            browser._reader = asyncio.StreamReader(limit=1 << 24)
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(browser._reader),
                os.fdopen(from_chrome[0], "rb", buffering=0),
            )
            browser._writer, _ = await loop.connect_write_pipe(
                asyncio.Protocol, os.fdopen(to_chrome[1], "wb", buffering=0)
            )
            browser._task = asyncio.create_task(browser._read())
            yield browser
        finally:
            await browser._close()

    async def _read(self) -> None:
        try:
            while True:
                message = json.loads((await self._reader.readuntil(b"\0"))[:-1])
                future = self._pending.pop(message.get("id", -1), None)
                if future is None:
                    self.events.append(message)
                elif not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError(f"chromium went away: {exc}"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One command (to the page once ``open_page`` attached to it); its result."""
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if self._session is not None and not method.startswith("Target."):
            message["sessionId"] = self._session
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        self._writer.write(json.dumps(message).encode() + b"\0")
        try:
            async with asyncio.timeout(WAIT):
                answer = await future
        except TimeoutError:
            raise BrowserError(f"no answer to {method} within {WAIT}s{self.log_tail()}") from None
        finally:
            self._pending.pop(call_id, None)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def open_page(self, url: str) -> None:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self._session = attached["sessionId"]
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        navigated = await self.send("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, until: Callable[[Any], bool]) -> Any:
        """Evaluate ``expression`` until ``until`` accepts its value; that value."""
        deadline = time.monotonic() + WAIT
        while True:
            value = await self.evaluate(expression)
            if until(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen within {WAIT}s; last: {value}")
            await asyncio.sleep(0.05)

    def problems(self) -> list[str]:
        """What the page reported as going wrong: exceptions, errors logged."""
        out = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(f"log: {params['entry']['text']} ({params['entry'].get('url')})")
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                out.append(f"console: {params['args']}")
        return out

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\nchromium said:\n" + self.log.read_text(errors="replace")[-3000:]
        return ""

    async def _close(self) -> None:
        proc = self.proc
        if proc.returncode is None and hasattr(self, "_writer"):
            with contextlib.suppress(BrowserError, ConnectionError):
                await self.send("Browser.close")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if hasattr(self, "_writer"):
            self._writer.close()
        if hasattr(self, "_task"):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _high(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


# What the page shows, read from its DOM.
PAGE_STATE = """(() => {
  const field = (row, name) => row.querySelector("[data-field=" + name + "]");
  return {
    connection: document.getElementById("connection").dataset.state,
    connectionText: document.getElementById("connection").textContent,
    emptyHidden: document.getElementById("empty").hidden,
    rows: [...document.querySelectorAll("#coordinators tr")].map((row) => ({
      coordinator: row.dataset.coordinator,
      level: row.dataset.level,
      rowClass: row.className,
      badge: field(row, "level").textContent,
      badgeClass: field(row, "level").className,
      fill: field(row, "fill").style.width,
      size: field(row, "size").textContent,
      time: field(row, "time").textContent,
      title: field(row, "time").title,
    })),
  };
})()"""


def row_of(state: dict[str, Any], coordinator_id: str) -> dict[str, Any] | None:
    found = [r for r in state["rows"] if r["coordinator"] == coordinator_id]
    return found[0] if found else None


@pytest.fixture
def chromium() -> str:
    return find_chromium()


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running_service(service_settings(database_url, str(tmp_path))) as svc:
        yield svc


async def test_page_shows_level_change_live(
    chromium: str, service: RunningService, tmp_path: Path
) -> None:
    coord: str = service.app.state.coordinator.coord_id
    bus: FeedbackBus = service.app.state.feedback_bus
    fanout: FeedbackFanout = service.app.state.feedback_fanout
    async with Browser.launch(chromium, tmp_path / "chromium") as browser:
        await browser.open_page(service.base_url + "/")
        state = await browser.wait_for(
            PAGE_STATE, lambda s: s["connection"] == "open" and row_of(s, coord) is not None
        )
        print(json.dumps(state, indent=1))
        print(fanout.subscriber_count)
        hard = FeedbackEvent.create(coord, 9500, 10000, BackpressureLevel.hard, "test")
        await bus.publish(hard)
        state = await browser.wait_for(
            PAGE_STATE, lambda s: (row_of(s, coord) or {}).get("level") == "hard"
        )
        print(json.dumps(state, indent=1))
        print(browser.problems())
        print(browser.events)
