"""A server holding hundreds of open feedback streams still exits promptly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from tests.support.process import serve

STREAMS = 200


async def open_raw_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream read at the socket level, to see exactly how the server ends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/feedback/stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    return reader, writer


async def read_snapshot(reader: asyncio.StreamReader) -> bytes:
    """The stream up to its snapshot, the first feedback event."""
    return await asyncio.wait_for(reader.readuntil(b"event: feedback"), 10)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 15)


def test_sigterm_with_open_streams_ends_them_and_exits(database_url: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": database_url,
        "MDS_SERVER_GRACEFUL_TIMEOUT": "30",  # if streams held uvicorn, exit would take 30 s
        "MDS_FEEDBACK_SSE_HEARTBEAT_SEC": "60",
    }
    with serve(env, tmp_path) as (proc, base):
        port = int(base.rsplit(":", 1)[1])

        async def scenario() -> tuple[list[bytes], float, float]:
            streams = await asyncio.gather(*(open_raw_stream(port) for _ in range(STREAMS)))
            snapshots = await asyncio.gather(*(read_snapshot(r) for r, _ in streams))
            tails = [asyncio.create_task(read_to_end(r)) for r, _ in streams]
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            bodies = [s + t for s, t in zip(snapshots, await asyncio.gather(*tails), strict=True)]
            for _, writer in streams:
                writer.close()
            return bodies, started, time.monotonic() - started

        bodies, sigterm_at, ended_after = asyncio.run(scenario())
        output, _ = proc.communicate(timeout=30)
        exited_after = time.monotonic() - sigterm_at
    assert proc.returncode == 0, output
    assert ended_after < 5, f"streams ended {ended_after:.1f}s after SIGTERM"
    assert exited_after < 10, f"exited {exited_after:.1f}s after SIGTERM (graceful bound 30 s)"
    for body in bodies:
        assert b"event: feedback" in body  # the snapshot came first
        assert body.endswith(b"0\r\n\r\n")  # then the final chunk: a clean end, not a cut
    assert f"{STREAMS} stream(s) ended for shutdown" in output
