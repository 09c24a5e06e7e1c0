"""A bundled PostgreSQL (pgserver) for running without a configured database.

Used only when no ``database_url`` is configured: ``make run`` on a fresh
machine gets a real PostgreSQL 16 in ``database.embedded_dir``. A configured URL
always wins.

One process owns a data folder at a time: ``start`` takes an exclusive lock on
``<data_dir>.lock`` beside it (``flock``; the folder itself must stay empty for
``initdb``) and ``stop`` gives it back, so a second ``mds-store`` on the same folder
is refused instead of joining (and, on its way out, stopping) the first one's
server. The kernel releases the lock when its holder dies, however it dies; the
postmaster of a SIGKILLed holder may still run, and the next owner takes it over
(reused when ready, else stopped and started again), never starting a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from .errors import StorageError

log = logging.getLogger(__name__)
# pgserver logs every initdb/pg_ctl command line with its full output at INFO.
logging.getLogger("pgserver").setLevel(logging.WARNING)

# pgserver's list of the processes that use the server in a data folder: the last
# one to leave stops it (one that died without leaving keeps it running forever).
_HANDLE_PIDS = ".handle_pids.json"


class EmbeddedDatabaseInUseError(StorageError):
    """Another process holds the embedded PostgreSQL's data folder; nothing was started,
    joined or stopped. The message names the folder and the holder's pid."""

    def __init__(self, data_dir: Path, owner: int | None) -> None:
        holder = f"pid {owner}" if owner is not None else "a process whose pid it did not write"
        super().__init__(
            f"the embedded PostgreSQL in {data_dir} is in use by another mds-store ({holder}); "
            "stop that one, or give this one a folder of its own (database.embedded_dir, "
            "MDS_DATABASE_EMBEDDED_DIR) or a database_url"
        )
        self.data_dir = data_dir
        self.owner = owner


class DataDirLock:
    """An exclusive ``flock`` on ``path`` holding the holder's pid, non-blocking."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, data_dir: Path) -> None:
        """Take it, or raise ``EmbeddedDatabaseInUseError`` naming the holder."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            raise EmbeddedDatabaseInUseError(data_dir, owner) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # the lock goes with the last descriptor


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


class EmbeddedPostgres:
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._lock = DataDirLock(self.data_dir.with_name(self.data_dir.name + ".lock"))
        self._server: Any = None
        self.uri: str | None = None

    async def start(self) -> str:
        """Start the server in ``data_dir`` (or take over the one a dead owner left
        running); return its URI. ``EmbeddedDatabaseInUseError`` when another live
        process owns the folder."""
        if self._server is not None and self.uri is not None:  # started already
            return self.uri
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire(self.data_dir)
        try:
            self._server = await asyncio.to_thread(self._start)
        except BaseException:
            self._lock.release()
            raise
        self.uri = str(self._server.get_uri())
        log.info("embedded PostgreSQL running: %s (data in %s)", self.uri, self.data_dir)
        return self.uri

    def _start(self) -> Any:
        self.data_dir.mkdir(exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers); harmless here.
            warnings.simplefilter("ignore", UserWarning)
            from pgserver.postgres_server import get_server

            self._take_over()
            return get_server(self.data_dir, cleanup_mode="stop")

    def _take_over(self) -> None:
        """Under the lock the folder is ours alone: forget the users a dead owner left
        listed (else our ``stop`` would leave the server running for them) and deal
        with its postmaster: reused when it still runs and is ready, else stopped (a
        ``postmaster.pid`` naming a live process that is no running postgres - a reused
        pid, a zombie - is removed) so that pgserver starts exactly one."""
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import
        from pgserver.utils import PostmasterInfo

        (self.data_dir / _HANDLE_PIDS).unlink(missing_ok=True)
        try:
            info = PostmasterInfo.read_from_pgdata(self.data_dir)
        except (OSError, ValueError, AssertionError):  # half-written: postgres judges it
            return
        if info is None or not info.is_running():
            return  # none, or a stale file: postgres itself starts over it
        if not _live_postgres(info.process):
            log.warning(
                "embedded PostgreSQL: postmaster.pid names pid %d, which is no running "
                "postgres; removed",
                info.pid,
            )
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
            return
        if info.status == "ready":
            log.info(
                "embedded PostgreSQL (pid %d) left running by a previous owner: taken over",
                info.pid,
            )
            return
        log.warning(
            "embedded PostgreSQL (pid %d) left %r by a previous owner: restarting it",
            info.pid,
            info.status,
        )
        # as pgserver runs it: under a user of its own when we are root
        user = "pgserver" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=user, timeout=60)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            try:
                await asyncio.to_thread(server.cleanup)
            finally:
                self._lock.release()
            log.info("embedded PostgreSQL stopped")


def _live_postgres(process: Any) -> bool:
    """Whether a ``psutil.Process`` is a postgres still running (not a zombie: where
    nobody reaps orphans, a dead postmaster stays one)."""
    try:
        return "postgres" in str(process.name()) and process.status() != "zombie"
    except Exception:  # gone meanwhile, or not ours to inspect
        return False


__all__ = ["DataDirLock", "EmbeddedDatabaseInUseError", "EmbeddedPostgres"]
