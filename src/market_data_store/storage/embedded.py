"""A bundled PostgreSQL (pgserver) for running without a configured database.

Used only when no ``database_url`` is configured: ``make run`` on a fresh
machine gets a real PostgreSQL 16 in ``database.embedded_dir``. A configured URL
always wins.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# pgserver logs every initdb/pg_ctl command line with its full output at INFO.
logging.getLogger("pgserver").setLevel(logging.WARNING)


class EmbeddedPostgres:
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._server: Any = None
        self.uri: str | None = None

    async def start(self) -> str:
        """Start (or attach to) the server in ``data_dir``; return its URI."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(self._start)
        self.uri = str(self._server.get_uri())
        log.info("embedded PostgreSQL running: %s (data in %s)", self.uri, self.data_dir)
        return self.uri

    def _start(self) -> Any:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); harmless here.
            warnings.simplefilter("ignore", UserWarning)
            from pgserver.postgres_server import get_server

            return get_server(self.data_dir, cleanup_mode="stop")

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
            log.info("embedded PostgreSQL stopped")
