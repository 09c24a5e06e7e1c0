"""Scenario 6: 500 feedback streams, 50 of which stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.process import serve
from tests.support.reliability import (
    Producer,
    ScenarioReport,
    ms,
    percentile,
    rss_mb,
)
from tests.support.waits import until

FAST = 450
MEASURED = 25  # of the fast ones, these parse every event and time its delivery
STALLED = 50
BASELINE = 8.0  # seconds of delivery measured before the stalled readers connect
RSS_BOUND_MB = 64.0  # peak server RSS over its RSS before any stream was opened
SEND_TIMEOUT = 1.0
SCENARIO = ScenarioReport(
    6,
    "Slow and many consumers",
    f"{FAST + STALLED} SSE streams on one server with feedback events flowing; after"
    f" {BASELINE:.0f} s, {STALLED} of them (4 KiB receive buffer) stop reading",
    f"server RSS peak < {RSS_BOUND_MB:.0f} MiB over its idle RSS; fast clients' delivery"
    " latency unchanged (p99 with stalled readers < 2 x p99 before + 20 ms, every event"
    " delivered); every stalled stream disconnected by the server, all fast ones kept",
)


class FastClient:
    def __init__(self, measure: bool) -> None:
        self.measure = measure
        self.latencies: list[tuple[float, float]] = []  # (arrival monotonic, latency s)
        self.events = 0
        self.ended = False

    async def run(self, port: int, connected: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /v1/feedback/stream HTTP/1.1\r\nhost: t\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            assert head.startswith(b"HTTP/1.1 200"), head
            connected.set()
            buffer = b""
            while chunk := await reader.read(65536):
                if not self.measure:
                    self.events += chunk.count(b"event: feedback")
                    await asyncio.sleep(0.2)  # still reading, just in larger gulps
                    continue
                now_wall, now = time.time(), time.monotonic()
                buffer += chunk
                *frames, buffer = buffer.split(b"\n\n")
                for frame in frames:
                    if b"event: feedback" not in frame:
                        continue
                    self.events += 1
                    data = next(x for x in frame.split(b"\n") if x.startswith(b"data: "))
                    self.latencies.append((now, now_wall - json.loads(data[6:])["ts"]))
            self.ended = True
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def open_stalled(port: int) -> socket.socket:
    """A stream whose reader reads the response head and then nothing more."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /v1/feedback/stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1024), 20)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


async def ended_by_server(sock: socket.socket) -> bool:
    """Read what is left: did the server end the stream (EOF or reset)?"""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(10):
            while await loop.sock_recv(sock, 65536):
                pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()
    return True


async def subscribers(client: httpx.AsyncClient) -> int:
    body = (await client.get("/healthz")).json()
    (feedback,) = [c for c in body["components"] if c["name"] == "feedback"]
    return int(feedback["details"]["subscribers"])


def dropped(metrics: str, reason: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("mds_feedback_sse_dropped_total") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.timeout(180)
def test_many_and_slow_consumers(database_url: str, tmp_path: Path, report: ScenarioReport) -> None:
    env = {
        "DATABASE_URL": database_url,
        "MDS_SERVER_INSTANCE_ID": "rel-6",
        "MDS_COORDINATOR_CAPACITY": "20",
        "MDS_COORDINATOR_HIGH_WATERMARK": "16",
        "MDS_COORDINATOR_LOW_WATERMARK": "10",
        "MDS_COORDINATOR_BATCH_SIZE": "10",
        "MDS_COORDINATOR_WORKERS": "1",
        "MDS_COORDINATOR_FLUSH_INTERVAL": "0.01",
        "MDS_COORDINATOR_DEAD_LETTER_PATH": str(tmp_path / "dlq.ndjson"),
        "MDS_FEEDBACK_SSE_SEND_TIMEOUT": str(SEND_TIMEOUT),
        "MDS_FEEDBACK_SSE_HEARTBEAT_SEC": "1",
        # FAST + STALLED streams, all from loopback: one client address for the cap
        "MDS_FEEDBACK_SSE_MAX_STREAMS_PER_CLIENT": str(FAST + STALLED + 10),
    }
    with serve(env, tmp_path) as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        idle_rss = rss_mb(proc.pid)

        async def scenario() -> Outcome:
            halt = asyncio.Event()
            rss: list[float] = []
            fast = [FastClient(measure=i < MEASURED) for i in range(FAST)]
            connected = [asyncio.Event() for _ in fast]
            readers = [
                asyncio.create_task(c.run(port, e)) for c, e in zip(fast, connected, strict=True)
            ]
            for event in connected:
                await asyncio.wait_for(event.wait(), 30)
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                assert await subscribers(client) == FAST
                generator = Producer(client, "FEED", batch=18, pace=0.05, wait_commit=True)
                generating = asyncio.create_task(generator.run(halt))

                async def sample_rss() -> None:
                    while not halt.is_set():
                        rss.append(rss_mb(proc.pid))
                        await asyncio.sleep(0.5)

                sampling = asyncio.create_task(sample_rss())
                started = time.monotonic()
                await asyncio.sleep(BASELINE)
                stalled_at = time.monotonic()
                stalled = await asyncio.gather(*(open_stalled(port) for _ in range(STALLED)))

                async def only_fast_left() -> bool:
                    return await subscribers(client) <= FAST

                await until(
                    only_fast_left,
                    timeout=90,
                    what="stalled streams disconnected",
                    interval=0.25,
                )
                all_dropped = time.monotonic() - stalled_at
                await asyncio.sleep(3)
                ended = time.monotonic()
                remaining = await subscribers(client)
                metrics = (await client.get("/metrics")).text
                halt.set()
                await asyncio.gather(generating, sampling)
                disconnected = await asyncio.gather(*(ended_by_server(s) for s in stalled))
            # the fast streams end when the server stops (SIGTERM ends every stream)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*readers), 30)
            await asyncio.to_thread(proc.wait, 30)
            measured = [c for c in fast if c.measure]
            return Outcome(
                before=[
                    lat for c in measured for t, lat in c.latencies if started + 1 <= t < stalled_at
                ],
                during=[lat for c in measured for t, lat in c.latencies if stalled_at <= t < ended],
                rss=rss,
                all_dropped=all_dropped,
                remaining=remaining,
                disconnected=disconnected,
                metrics=metrics,
                events=[c.events for c in fast],
                ended_cleanly=sum(c.ended for c in fast),
                generated=generator.statuses[201],
            )

        outcome = asyncio.run(scenario())
        output = proc.communicate(timeout=30)[0]

    o = outcome
    p99_before, p99_during = percentile(o.before, 0.99), percentile(o.during, 0.99)
    report.figures.update(
        {
            "streams": FAST + STALLED,
            "events per fast client (min / max)": f"{min(o.events)} / {max(o.events)}",
            "delivery p50 / p99 before stalls (ms)": (
                f"{ms(percentile(o.before, 0.5))} / {ms(p99_before)}"
            ),
            "delivery p50 / p99 with stalled readers (ms)": (
                f"{ms(percentile(o.during, 0.5))} / {ms(p99_during)}"
            ),
            "stalled streams all disconnected after (s)": round(o.all_dropped, 1),
            "dropped for send timeout / lag": (
                f"{dropped(o.metrics, 'send_timeout'):.0f} / {dropped(o.metrics, 'slow'):.0f}"
            ),
            "server RSS idle / peak (MiB)": f"{idle_rss:.0f} / {max(o.rss):.0f}",
        }
    )

    assert proc.returncode == 0, output[-3000:]
    assert max(o.rss) - idle_rss < RSS_BOUND_MB, o.rss
    assert o.remaining == FAST
    assert all(o.disconnected), f"{o.disconnected.count(False)} stalled stream(s) still open"
    assert dropped(o.metrics, "send_timeout") + dropped(o.metrics, "slow") == STALLED
    assert o.ended_cleanly == FAST  # every fast stream kept until the shutdown
    assert len(o.before) > 100, "too few events to compare"
    assert len(o.during) > 100, "too few events to compare"
    assert p99_during < 2 * p99_before + 0.02, (ms(p99_before), ms(p99_during))
    # every fast client saw every event: the same count, give or take the last one in flight
    assert max(o.events) - min(o.events) <= 3, (min(o.events), max(o.events))


@dataclass
class Outcome:
    before: list[float]
    during: list[float]
    rss: list[float]
    all_dropped: float
    remaining: int
    disconnected: list[bool]
    metrics: str
    events: list[int]
    ended_cleanly: int
    generated: int
