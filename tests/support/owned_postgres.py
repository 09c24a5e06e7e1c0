"""A PostgreSQL server the test owns: stopped and started at will, same data, same port.

pgserver creates the data folder (and, under root, the unprivileged user PostgreSQL
runs as); from then on the test drives ``pg_ctl`` itself, listening on
127.0.0.1:<port> (TCP, loopback only). Never the machine's shared server.

    pg = OwnedPostgres(tmp_path / "pg")
    pg.start()          # initdb on first use
    url = pg.url("postgres")
    pg.stop()           # fast shutdown: sessions are cut, as in an outage
    pg.start()          # the same data folder, the same port
    pg.stop()
"""

from __future__ import annotations

import socket
import subprocess
import warnings
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.port = _free_port()
        self.running = False
        self._user: str | None = None
        self._pg_ctl: Path | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _init(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR unset
            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.postgres_server import get_server

            # initdb (and the unprivileged user under root); it starts the server on a
            # unix socket, which is stopped at once: from here on pg_ctl is ours
            server = get_server(self.data_dir, cleanup_mode=None)
        self._user = server.system_user
        self._pg_ctl = POSTGRES_BIN_PATH / "pg_ctl"
        self._ctl("-w", "-m", "fast", "stop")

    def _ctl(self, *args: str) -> None:
        assert self._pg_ctl is not None
        proc = subprocess.run(
            [str(self._pg_ctl), "-D", str(self.data_dir), *args],
            user=self._user,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"pg_ctl {args}: {proc.stdout}{proc.stderr}"

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w``)."""
        if self._pg_ctl is None:
            self._init()
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}"
        self._ctl("-w", "-o", options, "-l", str(self.data_dir / "log"), "start")
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: open sessions are terminated, as when a database goes away."""
        if self.running:
            self._ctl("-w", "-m", "fast", "stop")
            self.running = False
