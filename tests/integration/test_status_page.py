"""The status page (GET /) in a real browser: headless Chromium against the real service.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on its file descriptors 3 and 4), so neither a port nor an extra
package is needed. ``--dump-dom`` cannot be used: alone it prints the page as loaded,
before any event came; with ``--virtual-time-budget`` Chromium never exits, as virtual
time does not advance while a request is pending and the page's event stream never ends.

The service runs in the test's event loop, so everything here is asynchronous.
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
from urllib.parse import urlsplit

import pytest

from market_data_store.coordinator import BackpressureLevel, FeedbackBus, FeedbackEvent
from market_data_store.feedback import FeedbackFanout
from tests.support import waits
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
WAIT = 10.0
"""Seconds any one step in the browser may take (a command, a change to show)."""

GREEN, AMBER, RED = "rgb(31, 157, 85)", "rgb(214, 137, 16)", "rgb(192, 57, 43)"

# What the page shows, read from its live DOM.
PAGE_STATE = """(() => {
  const field = (row, name) => row.querySelector("[data-field=" + name + "]");
  const connection = document.getElementById("connection");
  if (!connection || document.readyState === "loading") return null;  // not parsed yet
  return {
    connection: connection.dataset.state,
    connectionText: connection.textContent,
    emptyHidden: document.getElementById("empty").hidden,
    rows: [...document.querySelectorAll("#coordinators tr")].map((row) => ({
      coordinator: row.dataset.coordinator,
      id: field(row, "id").textContent,
      level: row.dataset.level,
      badge: field(row, "level").textContent,
      badgeColor: getComputedStyle(field(row, "level")).backgroundColor,
      fillColor: getComputedStyle(field(row, "fill")).backgroundColor,
      fill: field(row, "fill").style.width,
      size: field(row, "size").textContent,
      time: field(row, "time").textContent,
      title: field(row, "time").title,
    })),
  };
})()"""

PageState = dict[str, Any]


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium and the page it has open, over the DevTools protocol."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.WriteTransport,
        log: Path,
    ) -> None:
        self.log = log
        self.events: list[dict[str, Any]] = []  # what Chromium reported unasked
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._session: str | None = None
        self._target: str | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = json.loads((await self._reader.readuntil(b"\0"))[:-1])
                future = self._pending.pop(message.get("id", -1), None)
                if future is None:
                    self.events.append(message)
                elif not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError(f"chromium went away{self.log_tail()}"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One command (to the page once ``open`` attached to it); its result."""
        if self._task.done():
            raise BrowserError(f"chromium went away{self.log_tail()}")
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if self._session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        future = self._pending[call_id] = asyncio.get_running_loop().create_future()
        self._writer.write(json.dumps(message).encode() + b"\0")
        try:
            async with asyncio.timeout(WAIT):
                answer = await future
        except TimeoutError:
            raise BrowserError(f"no answer to {method} in {WAIT}s{self.log_tail()}") from None
        finally:
            self._pending.pop(call_id, None)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def open(self, url: str) -> None:
        """A new tab on ``url`` (returns once the navigation is committed)."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self._session = attached["sessionId"]
        self._target = target["targetId"]
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        navigated = await self.send("Page.navigate", url=url)
        if navigated.get("errorText"):
            raise BrowserError(f"{url}: {navigated['errorText']}")

    async def close_page(self) -> None:
        """Close the tab (and with it the page's event stream)."""
        if self._target is not None:
            await self.send("Target.closeTarget", targetId=self._target)
            self._target = self._session = None

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"the page threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, what: str, until: Callable[[PageState], bool]) -> PageState:
        """The page's state once ``until`` accepts it (polled; at most ``WAIT`` seconds)."""
        shown: list[PageState | None] = [None]

        async def shows() -> bool:
            shown[0] = await self.evaluate(PAGE_STATE)
            return shown[0] is not None and until(shown[0])

        try:
            await waits.until(shows, timeout=WAIT, what=f"the page showing {what}", interval=0.05)
        except AssertionError as error:
            raise AssertionError(f"{error}; it shows {shown[0]}") from None
        assert shown[0] is not None
        return shown[0]

    def take_problems(self) -> list[str]:
        """What the page reported going wrong since last asked: uncaught exceptions,
        errors logged (failed requests included)."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(f"console.error: {params['args']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                found.append(f"{entry['source']}: {entry['text']} ({entry.get('url')})")
        self.events.clear()
        return found

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\nchromium's output ends with:\n" + self.log.read_text(errors="replace")[-3000:]
        return ""

    async def close(self) -> None:
        """Ask Chromium to quit (the caller kills it if it does not)."""
        with contextlib.suppress(BrowserError):
            await self.send("Browser.close")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def launch_browser(chromium: str, workdir: Path) -> AsyncIterator[Browser]:
    """Headless Chromium with a fresh profile, ended (with its helpers) on exit."""
    # Chromium reads commands on fd 3 and answers on fd 4. bash puts the pipe ends
    # there (dash cannot name fds above 9); ours are moved above 9 first so that
    # placing one cannot overwrite the other.
    to_chromium = [_above_9(fd) for fd in os.pipe()]
    from_chromium = [_above_9(fd) for fd in os.pipe()]
    theirs = (to_chromium[0], from_chromium[1])
    log = workdir / "chromium.log"
    with contextlib.ExitStack() as ours:
        commands = ours.enter_context(os.fdopen(to_chromium[1], "wb", buffering=0))
        answers = ours.enter_context(os.fdopen(from_chromium[0], "rb", buffering=0))
        try:
            with log.open("wb") as output:
                proc = await asyncio.create_subprocess_exec(
                    shutil.which("bash") or "/bin/bash",
                    "-c",
                    f'exec "$0" "$@" 3<&{theirs[0]} 4>&{theirs[1]} {theirs[0]}<&- {theirs[1]}>&-',
                    chromium,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={workdir / 'profile'}",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    pass_fds=theirs,
                    start_new_session=True,  # a process group of its own, helpers included
                )
        finally:
            for fd in theirs:
                os.close(fd)
        try:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=1 << 24)
            read_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), answers
            )
            ours.callback(read_transport.close)
            write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, commands)
            ours.callback(write_transport.close)
            browser = Browser(reader, write_transport, log)
            try:
                yield browser
            finally:
                await browser.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
        finally:
            if proc.returncode is None:  # it did not quit when asked (or was never asked)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group of the process we started
                await proc.wait()


def _above_9(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def row_of(state: PageState, coordinator_id: str) -> dict[str, Any]:
    """The row of ``coordinator_id`` ({} when the page has none)."""
    rows = [r for r in state["rows"] if r["coordinator"] == coordinator_id]
    assert len(rows) <= 1, f"several rows for {coordinator_id}: {state}"
    return rows[0] if rows else {}


def shows(coordinator_id: str, level: str, connection: str = "open") -> Callable[[PageState], bool]:
    def check(state: PageState) -> bool:
        return (
            state["connection"] == connection
            and row_of(state, coordinator_id).get("level") == level
        )

    return check


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = "chromium is not installed (apt-get install chromium)"
    if REQUIRE_SERVICES:
        pytest.fail(f"MDS_TEST_REQUIRE_SERVICES=1 but {why}")
    pytest.skip(why)


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running_service(service_settings(database_url, str(tmp_path))) as svc:
        yield svc


@pytest.fixture
async def page_proxy(service: RunningService) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the service, for the browser: to cut its connection."""
    address = urlsplit(service.base_url)
    proxy = await TcpProxy((address.hostname or "127.0.0.1", address.port or 80)).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def browser(chromium: str, tmp_path: Path) -> AsyncIterator[Browser]:
    workdir = tmp_path / "chromium"
    workdir.mkdir()
    async with launch_browser(chromium, workdir) as b:
        yield b
        problems = b.take_problems()
    assert problems == []  # none the test did not expect


def coordinator_of(svc: RunningService) -> str:
    coord_id: str = svc.components.coordinator.coord_id
    return coord_id


async def emit(
    svc: RunningService, coordinator_id: str, size: int, capacity: int, level: BackpressureLevel
) -> FeedbackEvent:
    event = FeedbackEvent.create(coordinator_id, size, capacity, level, "test")
    bus: FeedbackBus = svc.components.feedback_bus
    await bus.publish(event)
    return event


async def streams_open(svc: RunningService, count: int) -> None:
    """Wait until the service has ``count`` feedback streams open."""
    fanout: FeedbackFanout = svc.components.feedback_fanout
    await waits.until(
        lambda: fanout.subscriber_count == count, timeout=WAIT, what=f"{count} streams open"
    )


# -- tests --------------------------------------------------------------------------


async def test_page_shows_ok_then_a_hard_level_live(
    service: RunningService, browser: Browser
) -> None:
    coord = coordinator_of(service)
    await browser.open(service.base_url + "/")

    # The snapshot: the service_started event of the local coordinator, level ok.
    state = await browser.wait_for(f"{coord} at ok", shows(coord, "ok"))
    assert state["connectionText"] == "live"
    assert state["emptyHidden"] is True
    assert [r["coordinator"] for r in state["rows"]] == [coord]
    row = row_of(state, coord)
    assert (row["id"], row["badge"], row["badgeColor"]) == (coord, "OK", GREEN)
    assert row["size"] == "0 / 10000 (0.0 %)"
    assert float(row["fill"].rstrip("%")) == 0
    assert row["title"].endswith(" · service_started")

    # A hard level produced while the page is open reaches it over the stream.
    await streams_open(service, 1)
    event = await emit(service, coord, 9500, 10000, BackpressureLevel.hard)
    state = await browser.wait_for(f"{coord} at hard", shows(coord, "hard"))
    row = row_of(state, coord)
    assert (row["badge"], row["badgeColor"], row["fillColor"]) == ("HARD", RED, RED)
    assert row["size"] == "9500 / 10000 (95.0 %)"
    assert float(row["fill"].rstrip("%")) == 95
    assert row["title"] == f"{time_iso(event.ts)} · test"
    assert row["time"]

    # Other coordinators get rows of their own, in id order; ours is unchanged.
    await emit(service, "zz-replica/bars", 6000, 10000, BackpressureLevel.soft)
    await emit(service, "aa-replica/bars", 12, 10000, BackpressureLevel.ok)
    state = await browser.wait_for(
        "three coordinators", lambda s: [r["level"] for r in s["rows"]] == ["ok", "hard", "soft"]
    )
    assert [r["coordinator"] for r in state["rows"]] == [
        "aa-replica/bars",
        coord,
        "zz-replica/bars",
    ]
    soft = row_of(state, "zz-replica/bars")
    assert (soft["badge"], soft["badgeColor"], soft["size"]) == (
        "SOFT",
        AMBER,
        "6000 / 10000 (60.0 %)",
    )
    assert row_of(state, coord)["size"] == "9500 / 10000 (95.0 %)"


async def test_page_reconnects_and_shows_what_it_missed(
    service: RunningService, page_proxy: TcpProxy, browser: Browser
) -> None:
    """The connection is cut (for real, by a TCP proxy between browser and service);
    the level changes meanwhile; the page shows it once it is back."""
    coord = coordinator_of(service)
    await browser.open(f"http://127.0.0.1:{page_proxy.port}/")
    await browser.wait_for(f"{coord} at ok", shows(coord, "ok"))
    await streams_open(service, 1)

    page_proxy.cut()
    state = await browser.wait_for("the connection lost", lambda s: s["connection"] == "closed")
    assert state["connectionText"] == "reconnecting…"
    assert row_of(state, coord)["level"] == "ok"  # the last known level stays shown
    await streams_open(service, 0)
    await emit(service, coord, 9000, 10000, BackpressureLevel.hard)

    page_proxy.restore()
    state = await browser.wait_for(f"{coord} at hard, reconnected", shows(coord, "hard"))
    assert row_of(state, coord)["size"] == "9000 / 10000 (90.0 %)"
    assert state["connectionText"] == "live"
    problems = browser.take_problems()
    assert problems, "the cut was not seen by the browser"
    assert all("/v1/feedback/stream" in p for p in problems), problems

    # and it follows live events again
    await emit(service, coord, 100, 10000, BackpressureLevel.ok)
    state = await browser.wait_for(f"{coord} back at ok", shows(coord, "ok"))
    assert row_of(state, coord)["size"] == "100 / 10000 (1.0 %)"
    await browser.close_page()  # before the proxy goes: that would be one more cut


async def test_page_retries_when_the_stream_is_refused(
    database_url: str, tmp_path: Path, browser: Browser
) -> None:
    """A 503 (too many streams) closes an EventSource for good: the page retries itself."""
    settings = service_settings(database_url, str(tmp_path), MDS_FEEDBACK_SSE_MAX_STREAMS="1")
    async with running_service(settings) as service:
        coord = coordinator_of(service)
        async with service.client.stream("GET", "/v1/feedback/stream") as taken:
            assert taken.status_code == 200
            await browser.open(service.base_url + "/")
            state = await browser.wait_for("the refusal", lambda s: s["connection"] == "closed")
            assert state["rows"] == []
            assert state["emptyHidden"] is False
        await browser.wait_for(f"{coord} at ok", shows(coord, "ok"))  # retried after 3 s
        await streams_open(service, 1)
        problems = browser.take_problems()
        assert problems, "the refusal was not seen by the browser"
        assert all("503" in p for p in problems), problems
        await browser.close_page()  # before the service goes


async def test_page_drops_coordinators_gone_after_a_reset(
    database_url: str, tmp_path: Path, browser: Browser
) -> None:
    """The page reconnects to another process (a restarted pod has a new instance id, or
    another replica behind the Service): its Last-Event-ID is unknown there, so the stream
    starts with ``event: reset`` and the full snapshot. A coordinator that snapshot leaves
    out is gone; its last level (here hard) must not stay on the page as if current."""
    proxy = await TcpProxy(("127.0.0.1", 9)).start()  # pointed at each service in turn
    try:
        old = service_settings(database_url, str(tmp_path), MDS_SERVER_INSTANCE_ID="old")
        async with running_service(old) as service:
            proxy.upstream = ("127.0.0.1", urlsplit(service.base_url).port or 80)
            await browser.open(f"http://127.0.0.1:{proxy.port}/")
            await browser.wait_for("old/bars at ok", shows("old/bars", "ok"))
            await streams_open(service, 1)
            await emit(service, "old/bars", 9000, 10000, BackpressureLevel.hard)
            await browser.wait_for("old/bars at hard", shows("old/bars", "hard"))
        new = service_settings(database_url, str(tmp_path), MDS_SERVER_INSTANCE_ID="new")
        async with running_service(new) as service:
            proxy.upstream = ("127.0.0.1", urlsplit(service.base_url).port or 80)
            state = await browser.wait_for("new/bars", shows("new/bars", "ok"))
            await browser.close_page()
        problems = browser.take_problems()
        assert all("/v1/feedback/stream" in p for p in problems), problems
        assert [r["coordinator"] for r in state["rows"]] == ["new/bars"], state["rows"]
    finally:
        await proxy.close()


def time_iso(ts: float) -> str:
    """``ts`` as JavaScript's ``new Date(ts * 1000).toISOString()`` writes it."""
    ms = int(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
