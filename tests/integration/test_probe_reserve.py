"""The probe reserve on the real service (issue 18, item 7): connections beyond
``server.max_connections`` that send nothing do not hold their descriptors for
``read_timeout``. At most ``PROBE_RESERVE`` of them are open; each newer one takes
the place of the oldest, which is closed at once, and the probes still get through.
(Under a real low ``ulimit -n``: tests/reliability/test_12_descriptor_reserve.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from market_data_store.server import PROBE_RESERVE, TransportStats
from tests.support.service import RunningService, running_service, service_settings
from tests.support.waits import until

BOUND = 15.0  # seconds: "closed now", far below read_timeout
CAP = 3
BEYOND = 5  # idle connections beyond the cap and its reserve


def stats_of(svc: RunningService) -> TransportStats:
    stats: TransportStats = svc.server.transport_stats  # type: ignore[attr-defined]
    return stats


async def request(port: int, head: bytes) -> bytes:
    """``head`` on a new connection; everything until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        return await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()


async def test_idle_connections_beyond_the_cap_are_closed_at_once_and_probes_pass(
    database_url: str, tmp_path: Path
) -> None:
    settings = service_settings(
        database_url,
        str(tmp_path),
        MDS_SERVER_MAX_CONNECTIONS=str(CAP),
        MDS_FEEDBACK_SSE_MAX_STREAMS=str(CAP - 1),
        MDS_SERVER_READ_TIMEOUT="60",  # no idle connection is timed out here
    )
    async with running_service(settings) as svc:
        stats = stats_of(svc)
        port = int(svc.base_url.rsplit(":", 1)[1])
        held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            # the cap and the reserve taken by connections that never send a byte
            for _ in range(CAP + PROBE_RESERVE):
                held.append(await asyncio.open_connection("127.0.0.1", port))
            await until(lambda: stats.over_capacity == PROBE_RESERVE, what="all accepted")
            assert stats.open_connections == CAP
            # more of them: the oldest beyond the cap give their places, closed at once
            for _ in range(BEYOND):
                held.append(await asyncio.open_connection("127.0.0.1", port))
            oldest = held[CAP : CAP + BEYOND]
            for reader, _ in oldest:
                assert await asyncio.wait_for(reader.read(), BOUND) == b""

            for path in (b"/healthz", b"/readyz"):
                answer = await request(port, b"GET %s HTTP/1.1\r\nhost: t\r\n\r\n" % path)
                assert answer.startswith(b"HTTP/1.1 200"), answer
            refused = await request(port, b"GET /v1/bars HTTP/1.1\r\nhost: t\r\n\r\n")
            assert refused.startswith(b"HTTP/1.1 503"), refused

            kept = held[:CAP]  # within the cap: theirs until read_timeout
            assert not any(reader.at_eof() for reader, _ in kept)
            assert stats.open_connections == CAP
            assert stats.reserve_open <= PROBE_RESERVE
            assert stats.reserve_closed >= BEYOND
        finally:
            for _, writer in held:
                writer.close()
        await until(lambda: stats.open_connections < CAP, what="a slot freed")
        text = (await svc.client.get("/metrics")).text
    (closed,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "mds_http_connections_refused"
        for sample in family.samples
        if sample.labels.get("reason") == "probe_reserve"
    ]
    assert closed >= BEYOND
