"""``mds-store`` commands against a real PostgreSQL: one-line failures, same exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.postgres import replace_url
from tests.support.process import SERVE, free_port, serve_once
from tests.support.waits import until_sync

MIGRATE = [sys.executable, "-m", "market_data_store.cli", "migrate"]
SECRET = "pa55-Wq7z"


def broken_urls(database_url: str) -> dict[str, str]:
    return {
        "unreachable": f"postgresql://u:{SECRET}@127.0.0.1:{free_port()}/x",
        "wrong credentials": replace_url(database_url, user="no_such_role_h8", password=SECRET),
        "missing database": replace_url(
            database_url, password=SECRET, database="no_such_database_h8"
        ),
    }


@pytest.mark.parametrize("case", ["unreachable", "wrong credentials", "missing database"])
def test_migrate_fails_in_one_line_with_the_exit_code_of_serve(
    database_url: str, tmp_path: Path, case: str
) -> None:
    url = broken_urls(database_url)[case]
    # long enough for several attempts at an unreachable one (0.2, 0.4, 0.8, 1.6 s apart)
    env = {**os.environ, "DATABASE_URL": url, "MDS_DATABASE_STARTUP_TIMEOUT": "3"}
    migrate = subprocess.run(MIGRATE, env=env, capture_output=True, text=True, timeout=60)
    served = serve_once(env, tmp_path, timeout=60)
    assert migrate.returncode == served.returncode == 3, (migrate.stderr, served.stderr)
    assert "Traceback" not in migrate.stderr
    assert SECRET not in migrate.stderr + migrate.stdout
    last = migrate.stderr.strip().splitlines()[-1]
    assert last.startswith("mds-store: migrate failed: database postgresql://")
    # the reason is the one serve gives (up to the error's text: the driver words a
    # refused connection differently from one attempt to the next)
    what, error_class, _ = last.split(" failed: ", 1)[1].split(": ", 2)
    assert f"start-up failed: {what}: {error_class}: " in served.stderr
    if case != "unreachable":  # no waiting: the one line is all
        assert migrate.stderr.count("\n") == 1, migrate.stderr
    else:  # one line while it retries (one per kind of error), then the error
        waiting = migrate.stderr.strip().splitlines()[:-1]
        assert len(waiting) == 1, migrate.stderr
        assert "database not reachable yet (ConnectionRefusedError: " in waiting[0]


def test_serve_names_its_external_database_redacted(database_url: str, tmp_path: Path) -> None:
    """Started against a configured database, the log says which one (password masked)."""
    url = replace_url(database_url, password=SECRET)
    url += ("&" if urlsplit(url).query else "?") + "sslmode=disable"
    env = {**os.environ, "DATABASE_URL": url}
    proc = subprocess.Popen(
        [*SERVE, str(free_port())],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        while "market-data-store ready" not in seen:
            line = proc.stderr.readline()
            assert line, f"exited early: {seen}"
            seen += line
    finally:
        proc.terminate()
        seen += proc.communicate(timeout=30)[1]
    host = urlsplit(database_url).netloc.rpartition("@")[2]
    assert f"using database postgresql://postgres:***@{host}/" in seen
    assert SECRET not in seen


def test_serve_never_logs_the_webhook_url_secrets(database_url: str, tmp_path: Path) -> None:
    """Every webhook delivery is an httpx request, which httpx logs at INFO with its
    whole URL: password, path and query. The log shows the origin only."""
    delivered: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            delivered.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_address[1]
    secrets = ("PASS-5ecr", "PATHTOKEN-5ecr", "QUERYKEY-5ecr", SECRET)
    env = {
        **os.environ,
        "DATABASE_URL": replace_url(database_url, password=SECRET),
        "MDS_FEEDBACK_WEBHOOK_URL": (
            f"http://user:PASS-5ecr@127.0.0.1:{port}/hook/PATHTOKEN-5ecr?key=QUERYKEY-5ecr"
        ),
    }
    proc = subprocess.Popen(
        [*SERVE, str(free_port())], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        until_sync(lambda: bool(delivered), timeout=30, what="a webhook delivery")
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[1]
        receiver.shutdown()
        receiver.server_close()
    assert delivered[0] == "/hook/PATHTOKEN-5ecr?key=QUERYKEY-5ecr"  # it was that URL
    assert f"feedback webhook on: http://127.0.0.1:{port}/…" in log
    assert not [s for s in secrets if s in log], log
