"""A ``TcpProxy`` on a loop of its own thread, for tests whose service is a separate
process started synchronously (``tests.support.process.serve``): the proxy forwards
while the test blocks, and is hung or cut from the test's thread.

    with ProxyThread(upstream_of(database_url)) as proxy:
        env = {"DATABASE_URL": proxy.url_for(database_url)}
        ...
        proxy.hang()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType

from tests.support.tcp_proxy import TcpProxy


class ProxyThread:
    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.proxy = TcpProxy(upstream)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url_for(self, url: str) -> str:
        return self.proxy.url_for(url)

    def hang(self) -> None:
        self._call(self.proxy.hang)

    def restore(self) -> None:
        self._call(self.proxy.restore)

    def cut(self) -> None:
        self._call(self.proxy.cut)

    def _call(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
