"""POST/GET /v1/bars over real HTTP into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from market_data_core import Bar
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent

from market_data_store.coordinator import DeadLetterQueue
from market_data_store.storage import BarRow
from tests.support.bars import T0, row, wire_bar
from tests.support.postgres import refusing, stored_bars
from tests.support.service import RunningService, running_service, service_settings
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import until

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# A bar as producers post it here: a lower-case symbol (the store normalises it).
bar = partial(wire_bar, symbol="aapl", delayed=False)


def payload(*bars: dict[str, Any], provider: str = "ibkr") -> dict[str, Any]:
    return {"provider": provider, "bars": list(bars)}


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        ADMIN_TOKEN=TOKEN,
        MDS_INGEST_MAX_BARS_PER_REQUEST="500",
        MDS_INGEST_MAX_BODY_BYTES="200000",
    )
    async with running_service(settings) as svc:
        yield svc


async def post(
    client: httpx.AsyncClient, body: Any, *, wait: bool = False, **kwargs: Any
) -> httpx.Response:
    params = {"wait": "commit"} if wait else {}
    return await client.post("/v1/bars", json=body, params=params, **kwargs)


# -- round trips ---------------------------------------------------------------


async def test_post_then_get_round_trip_is_exact(service: RunningService) -> None:
    sent = [bar(0, close="187.020"), bar(1, open=187.5, high="188", low=187, close=187.25)]
    response = await post(service.client, payload(*sent), wait=True)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] == body["committed"] == 2
    assert body["dead_lettered"] == 0
    assert body["capacity"] == 10_000

    got = await service.client.get(
        "/v1/bars", params={"symbol": "AAPL", "resolution": "1m", "provider": "ibkr"}
    )
    assert got.status_code == 200
    page = got.json()
    assert page["count"] == 2
    assert page["truncated"] is False
    first, second = page["bars"]
    assert first["close"] == "187.020"  # the scale as sent
    assert (second["open"], second["high"], second["low"]) == ("187.5", "188", "187")
    assert first["symbol"] == "AAPL"  # normalised
    core = Bar.model_validate({k: v for k, v in first.items() if k != "provider"})
    assert core.close == Decimal("187.020")
    assert core.ts == T0


async def test_plain_202_then_rows_arrive(service: RunningService, database_url: str) -> None:
    response = await post(service.client, payload(*(bar(i) for i in range(50))))
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 50
    assert body["level"] in ("ok", "soft", "hard")
    assert set(body) == {"accepted", "level", "queue_size", "capacity", "coordinator_id", "credit"}
    assert body["credit"] > 0
    assert body["coordinator_id"] == "test/bars"
    await asyncio.wait_for(service.components.coordinator.wait_idle(), 10)
    assert len(await stored_bars(database_url)) == 50


async def test_wait_commit_rows_are_visible_to_another_connection(
    service: RunningService, database_url: str
) -> None:
    response = await post(service.client, payload(*(bar(i) for i in range(300))), wait=True)
    assert response.status_code == 201
    assert response.json()["committed"] == 300
    assert len(await stored_bars(database_url)) == 300  # no waiting: already committed


async def test_same_request_twice_is_one_row_per_key_newer_values_win(
    service: RunningService, database_url: str
) -> None:
    first = payload(*(bar(i) for i in range(10)))
    assert (await post(service.client, first, wait=True)).status_code == 201
    assert (await post(service.client, first, wait=True)).status_code == 201
    assert len(await stored_bars(database_url)) == 10
    changed = payload(bar(3, close="187.33"))
    assert (await post(service.client, changed, wait=True)).status_code == 201
    rows = await stored_bars(database_url)
    assert len(rows) == 10
    assert rows[3]["close"] == Decimal("187.33")
    assert rows[3]["updated_at"] > rows[3]["ingested_at"]


async def test_msgpack_and_json_give_identical_rows(
    service: RunningService, database_url: str
) -> None:
    bars = [bar(i, close=f"187.{i:02d}", open=187.1, volume=1000 + i) for i in range(5)]
    json_body = payload(*bars, provider="json")
    packed = msgspec.msgpack.encode(payload(*bars, provider="msgpack"))
    r1 = await post(service.client, json_body, wait=True)
    r2 = await service.client.post(
        "/v1/bars",
        content=packed,
        params={"wait": "commit"},
        headers={"content-type": "application/msgpack"},
    )
    assert (r1.status_code, r2.status_code) == (201, 201)
    rows = await stored_bars(database_url)
    by_provider: dict[str, list[tuple[Any, ...]]] = {"json": [], "msgpack": []}
    for r in rows:
        by_provider[r["provider"]].append(
            tuple(r[k] for k in ("symbol", "ts", "open", "close", "volume"))
        )
    assert by_provider["json"] == by_provider["msgpack"]
    assert len(by_provider["json"]) == 5
    assert by_provider["json"][0][2] == Decimal("187.1")  # a float 187.1 kept exact


async def test_json_with_charset_is_accepted(service: RunningService) -> None:
    response = await service.client.post(
        "/v1/bars",
        content=json.dumps(payload(bar())),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 202


# -- refusals: every rule, nothing stored --------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"symbol": ""}, "symbol"),
        ({"symbol": "   "}, "symbol"),
        ({"symbol": "X" * 33}, "symbol"),
        ({"symbol": "BAD SYMBOL"}, "symbol"),
        ({"ts": "2024-01-02T14:30:00"}, "ts"),
        ({"ts": "yesterday"}, "ts"),
        ({"open": "NaN"}, "open"),
        ({"high": "Infinity"}, "high"),
        ({"close": "abc"}, "close"),
        ({"close": "187.0000000000000000001"}, "close"),
        ({"high": "1e25", "close": "1e21"}, "high"),
        ({"low": "187.10"}, "low"),
        ({"high": "187.00"}, "high"),
        ({"volume": "-1"}, "volume"),
        ({"resolution": "1x"}, "resolution"),
        ({"resolution": "1m\n"}, "resolution"),
        ({"ts": "9999-12-31T23:00:00-05:00"}, "ts"),
        ({"ts": "0001-01-01T00:00:00+01:00"}, "ts"),
        ({"ts": 1704205800}, "ts"),
        ({"resolution": "0m"}, "resolution"),
        ({"resolution": "m"}, "resolution"),
        ({"delayed": "perhaps"}, "delayed"),
        ({"delayed": "false"}, "delayed"),
        ({"timeframe": "1m"}, "timeframe"),  # unknown: never silently stored as 1d
        ({"symbol": "\u0410\u0410PL"}, "symbol"),  # Cyrillic look-alike
        ({"symbol": "\uff21\uff21\uff30\uff2c"}, "symbol"),  # fullwidth
        ({"symbol": "stra\u00dfe"}, "symbol"),  # would upper-case to STRASSE
        ({"volume": " 5 "}, "volume"),
        ({"volume": "+5"}, "volume"),
        ({"volume": "1_000"}, "volume"),
        ({"volume": "\u0665"}, "volume"),  # Arabic-Indic digit
        ({"volume": "0123"}, "volume"),
    ],
)
async def test_each_rule_gives_422_naming_bar_and_field(
    service: RunningService, database_url: str, bad: dict[str, Any], field: str
) -> None:
    response = await post(service.client, payload(bar(0), bar(1, **bad), bar(2)))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert {"index": 1, "field": field} in [
        {"index": e["index"], "field": e["field"]} for e in body["errors"]
    ]
    assert all(e["index"] == 1 for e in body["errors"])
    await asyncio.sleep(0.05)
    assert await stored_bars(database_url) == []  # all or nothing: bars 0 and 2 not stored


async def test_all_errors_are_reported_at_once(service: RunningService) -> None:
    bars = [bar(0, open="x", volume="-"), bar(1), bar(2, symbol="", low="999", volume="-5")]
    body = (await post(service.client, payload(*bars))).json()
    reported = {(e["index"], e["field"]) for e in body["errors"]}
    # type errors of bar 0 and rule errors of bar 2, in one answer
    assert reported == {(0, "open"), (0, "volume"), (2, "symbol"), (2, "low"), (2, "volume")}
    body = (await post(service.client, payload(bar(0, symbol="", low="999", volume="-5")))).json()
    assert {(e["index"], e["field"]) for e in body["errors"]} == {
        (0, "symbol"),
        (0, "low"),
        (0, "volume"),
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"bars": [bar()]}, "provider"),
        ({"provider": "  ", "bars": [bar()]}, "provider"),
        ({"provider": "ibkr", "bars": []}, "bars"),
        ({"provider": "ibkr"}, "bars"),
        ({"provider": "ibkr", "bars": [5]}, "$"),
        ([1, 2], "$"),
        ({"provider": "ibkr", "bars": [{"symbol": "A"}]}, "ts"),
    ],
)
async def test_bad_shapes_are_422(service: RunningService, body: Any, field: str) -> None:
    response = await post(service.client, body)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["errors"]}


@pytest.mark.parametrize("media_type", ["application/json", "application/msgpack"])
async def test_a_large_body_reports_every_error_of_every_bar(
    service: RunningService, database_url: str, media_type: str
) -> None:
    """Large enough to be decoded off the event loop: unknown top-level and bar fields
    and a mistyped field are all named, the rule errors of later bars too, and the
    count of what is not shown is exact."""
    bars = [bar(i, symbol="S" * 30) for i in range(500)]
    bars[3]["timeframe"] = "1m"
    bars[7]["open"] = []
    for i in range(100, 500):
        bars[i]["low"] = "999"  # 400 rule errors after the type error
    body: dict[str, Any] = {**payload(*bars), "note": "x"}
    data = msgspec.json.encode(body) if "json" in media_type else msgspec.msgpack.encode(body)
    assert len(data) > 64 * 1024
    response = await service.client.post(
        "/v1/bars", content=data, headers={"content-type": media_type}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    shown = [(e["index"], e["field"]) for e in problem["errors"]]
    assert shown[:4] == [(None, "note"), (3, "timeframe"), (7, "open"), (100, "low")]
    assert len(shown) == 100
    assert problem["more_errors"] == 3 + 400 - 100
    assert await stored_bars(database_url) == []


async def test_malformed_bodies_are_400(service: RunningService) -> None:
    bad_json = await service.client.post(
        "/v1/bars",
        content=b'{"provider": "x", "bars": [',
        headers={"content-type": "application/json"},
    )
    assert bad_json.status_code == 400
    assert "not valid application/json" in bad_json.json()["detail"]
    bad_pack = await service.client.post(
        "/v1/bars", content=b"\xc1\xc1", headers={"content-type": "application/msgpack"}
    )
    assert bad_pack.status_code == 400


async def test_other_content_types_are_415(service: RunningService) -> None:
    for content_type in ("text/plain", "application/xml", ""):
        response = await service.client.post(
            "/v1/bars", content=b"{}", headers={"content-type": content_type}
        )
        assert response.status_code == 415
        assert "application/msgpack" in response.json()["detail"]


async def test_too_many_bars_and_too_big_bodies_are_413(
    service: RunningService, database_url: str
) -> None:
    too_many = await post(service.client, payload(*(bar(i) for i in range(501))))
    assert too_many.status_code == 413
    assert "at most 500" in too_many.json()["detail"]
    padding = "x" * 250_000
    too_big = await post(service.client, {**payload(bar()), "padding": padding})
    assert too_big.status_code == 413
    assert await stored_bars(database_url) == []


# -- backpressure -------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["block", "error"])
async def test_full_queue_answers_503_with_retry_after_and_stores_nothing_refused(
    database_url: str, proxy: TcpProxy, tmp_path: Path, strategy: str
) -> None:
    settings = service_settings(
        proxy.url_for(database_url),
        str(tmp_path),
        MDS_COORDINATOR_CAPACITY="100",
        MDS_COORDINATOR_BATCH_SIZE="10",
        MDS_COORDINATOR_WORKERS="1",
        MDS_COORDINATOR_SUBMIT_TIMEOUT="0.3",
        MDS_COORDINATOR_OVERFLOW_STRATEGY=strategy,
        MDS_INGEST_MAX_BARS_PER_REQUEST="100",
    )
    async with running_service(settings) as svc:
        proxy.hang()  # the database stops answering: writes stall, the queue fills
        accepted = await post(svc.client, payload(*(bar(i) for i in range(100))))
        assert accepted.status_code == 202
        refused = await post(svc.client, payload(*(bar(i) for i in range(100, 150))))
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        problem = refused.json()
        assert problem["status"] == 503
        assert problem["retry_after"] == int(refused.headers["retry-after"])
        event = CoreFeedbackEvent.model_validate(problem["feedback"])
        assert event.level.value == "hard"
        assert event.capacity == 100
        assert problem["feedback"]["reason"] == "queue_full"

        proxy.restore()
        await asyncio.wait_for(svc.components.coordinator.wait_idle(), 30)
    stored = await stored_bars(database_url)
    minutes = {int((r["ts"] - T0).total_seconds() // 60) for r in stored}
    assert minutes == set(range(100))  # the accepted request, whole; none of the refused one


async def test_ingest_refused_while_shutting_down(service: RunningService) -> None:
    service.components.lifecycle.begin_shutdown()
    response = await post(service.client, payload(bar()))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "shutting down" in response.json()["detail"]


# -- reads ---------------------------------------------------------------------


async def test_get_filters_orders_and_limits(service: RunningService) -> None:
    await post(service.client, payload(*(bar(i) for i in range(20)), provider="a"), wait=True)
    await post(service.client, payload(*(bar(i) for i in range(5)), provider="b"), wait=True)
    params: dict[str, Any] = {
        "provider": "b",
        "symbol": "aapl",
        "resolution": "1m",
        "start": (T0 + timedelta(minutes=2)).isoformat(),
        "end": (T0 + timedelta(minutes=4)).isoformat(),
    }
    page = (await service.client.get("/v1/bars", params=params)).json()
    assert [(b["provider"], b["ts"]) for b in page["bars"]] == [
        ("b", "2024-01-02T14:32:00Z"),
        ("b", "2024-01-02T14:33:00Z"),
    ]
    limited = (
        await service.client.get(
            "/v1/bars", params={"symbol": "AAPL", "resolution": "1m", "provider": "a", "limit": 7}
        )
    ).json()
    assert limited["count"] == 7
    assert limited["truncated"] is True
    empty = (
        await service.client.get(
            "/v1/bars", params={"provider": "a", "symbol": "MSFT", "resolution": "1m"}
        )
    ).json()
    assert empty == {"bars": [], "count": 0, "truncated": False, "next": None}


@pytest.mark.parametrize(
    "params",
    [
        {"symbol": "AAPL", "resolution": "1m"},
        {"provider": "a", "symbol": "AAPL"},
        {"provider": "a", "resolution": "1m", "symbol": "AAPL", "symbols": "AAPL"},
        {"provider": "a", "resolution": "1m", "symbols": "AAPL,,MSFT"},
        {"provider": "a", "resolution": "1m", "cursor": "bm90IGEgY3Vyc29y"},
        {"provider": "a", "resolution": "1h", "resample_from": "7m"},
        {"provider": " ", "symbol": "AAPL", "resolution": "1m"},
        {"provider": "a", "symbol": "AAPL", "resolution": "1x"},
        {"provider": "a", "symbol": " ", "resolution": "1m"},
        {"provider": "a", "symbol": "AAPL", "resolution": "1m", "start": "2024-01-02T14:30:00"},
        {"provider": "a", "symbol": "AAPL", "resolution": "1m", "start": "not-a-date"},
        {
            "provider": "a",
            "symbol": "AAPL",
            "resolution": "1m",
            "start": "2024-01-03T00:00:00Z",
            "end": "2024-01-02T00:00:00Z",
        },
        {"provider": "a", "symbol": "AAPL", "resolution": "1m", "limit": "0"},
        {"provider": "a", "symbol": "AAPL", "resolution": "1m", "limit": "10001"},
        {"provider": "a", "symbol": "AAPL", "resolution": "1m", "limit": "many"},
        {"provider": "p\x00", "symbol": "AAPL", "resolution": "1m"},
        {"provider": "a", "symbol": "\u0410\u0410PL", "resolution": "1m"},
        {"provider": "\uff49\uff42\uff4b\uff52", "symbol": "AAPL", "resolution": "1m"},
        {"provider": "a", "symbol": "stra\u00dfe", "resolution": "1m"},
        {"provider": "a", "symbol": "AAPL", "resolution": "1m\n"},
        {
            "provider": "a",
            "symbol": "AAPL",
            "resolution": "1m",
            "start": "0001-01-01T00:00:00+01:00",
        },
    ],
)
async def test_bad_read_parameters_are_400(service: RunningService, params: dict[str, str]) -> None:
    response = await service.client.get("/v1/bars", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("key", "value"), [("symbol", "\u001cAAPL"), ("symbol", "\tAAPL\n"), ("provider", "\u001cp")]
)
async def test_control_characters_are_refused_not_stripped(
    service: RunningService, database_url: str, key: str, value: str
) -> None:
    bars = [bar(0, symbol=value)] if key == "symbol" else [bar(0)]
    provider = value if key == "provider" else "ibkr"
    response = await post(service.client, payload(*bars, provider=provider))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [key]
    query = {"provider": "ibkr", "symbol": "AAPL", "resolution": "1m", key: value}
    read = await service.client.get("/v1/bars", params=query)
    assert read.status_code == 400, read.text
    assert [e["key"] for e in read.json()["errors"]] == [key]
    assert await stored_bars(database_url) == []


async def test_read_bounds_state_the_exact_range(service: RunningService) -> None:
    query = {"provider": "a", "symbol": "A", "resolution": "1m", "end": "2200-01-01T00:00:01Z"}
    response = await service.client.get("/v1/bars", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [
        {"key": "end", "message": "must be from 1800-01-01T00:00:00Z to 2200-01-01T00:00:00Z"}
    ]


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "x-custom , chunked"])
async def test_transfer_codings_other_than_chunked_are_501(
    service: RunningService, database_url: str, coding: str
) -> None:
    """RFC 9112 6.1: a transfer coding the server does not understand is a 501, not a
    body read as if it were plain."""
    host, port = service.base_url.removeprefix("http://").rsplit(":", 1)
    data = json.dumps(payload(bar(0))).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/bars HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Transfer-Encoding: {coding}\r\nConnection: close\r\n\r\n".encode()
        + f"{len(data):x}\r\n".encode()
        + data
        + b"\r\n0\r\n\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 "), answer
    assert b"application/problem+json" in head.lower()
    assert b"transfer coding" in body
    assert await stored_bars(database_url) == []


# -- dead letters --------------------------------------------------------------


# A dead-lettered bar; bar 2 with low="12" breaks bars_ohlc_consistent (high is 11).
dlq_row = partial(row, provider="dlq", open="10", high="11", low="9", close="10.5", volume="100")


async def test_dead_letter_inspection_and_replay(
    service: RunningService, database_url: str, tmp_path: Path
) -> None:
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    await dlq.save([dlq_row(0), dlq_row(1)], "ConnectionError: lost during a forced stop")
    await dlq.save([dlq_row(2, low="12")], "CheckViolationError: bars_ohlc_consistent")
    await dlq.save([dlq_row(3)], "something transient")

    assert (await service.client.get("/admin/dlq")).status_code == 401
    summary = (await service.client.get("/admin/dlq", headers=AUTH)).json()
    assert (summary["records"], summary["items"]) == (3, 4)
    assert summary["recent"][-1]["items"][0]["ts"] == "2024-01-02T14:33:00Z"
    assert "ConnectionError" in summary["recent"][0]["error"]

    assert (await service.client.post("/admin/dlq/replay")).status_code == 401
    replay = await service.client.post("/admin/dlq/replay", headers=AUTH)
    assert replay.status_code == 200
    assert replay.json() == {
        "records": 3,
        "items": 4,
        "written": 3,
        "dead_lettered_again": 1,
        "requeued_records": 0,
        "pending": False,
    }
    stored = await stored_bars(database_url)
    assert [r["ts"] for r in stored] == [T0 + timedelta(minutes=m) for m in (0, 1, 3)]

    after = (await service.client.get("/admin/dlq", headers=AUTH)).json()
    assert (after["records"], after["items"]) == (1, 1)  # only the poison bar remains
    assert "bars_ohlc_consistent" in after["recent"][0]["error"]
    assert not [name for name in os.listdir(tmp_path) if ".claimed-" in name]


async def test_replay_does_not_roll_back_newer_data(
    service: RunningService, database_url: str, tmp_path: Path
) -> None:
    newer = payload(bar(0, close="187.30"), provider="dlq")
    newer["bars"][0]["symbol"] = "AAPL"
    assert (await post(service.client, newer, wait=True)).status_code == 201
    dlq = DeadLetterQueue[BarRow](tmp_path / "dlq.ndjson")
    await dlq.save([dlq_row(0, open="187.15", high="187.40", low="186.90", close="187.00")], "old")
    result = (await service.client.post("/admin/dlq/replay", headers=AUTH)).json()
    assert result["written"] == 1  # it landed (nothing lost)...
    (stored,) = await stored_bars(database_url)
    assert stored["close"] == Decimal("187.30")  # ...without overwriting the newer version


async def test_same_key_twice_in_one_request_keeps_the_last(
    service: RunningService, database_url: str
) -> None:
    sent = payload(*(bar(0, close=f"187.{i:02d}") for i in range(10)), bar(1))
    response = await post(service.client, sent, wait=True)
    assert response.status_code == 201
    assert response.json()["accepted"] == 2  # one row per key
    rows = await stored_bars(database_url)
    assert [r["close"] for r in rows] == [Decimal("187.09"), Decimal("187.02")]


async def test_gzip_bodies_are_415(service: RunningService) -> None:
    import gzip

    response = await service.client.post(
        "/v1/bars",
        content=gzip.compress(json.dumps(payload(bar())).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 415
    assert "encoding" in response.json()["detail"]


async def test_reads_answer_503_while_the_database_is_gone(
    database_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    settings = service_settings(proxy.url_for(database_url), str(tmp_path))
    async with running_service(settings) as svc:
        params = {"provider": "a", "symbol": "AAPL", "resolution": "1m"}
        assert (await svc.client.get("/v1/bars", params=params)).status_code == 200
        proxy.cut()
        response = await svc.client.get("/v1/bars", params=params)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.headers["content-type"] == "application/problem+json"
        proxy.restore()


async def test_a_busy_pool_is_not_an_unreachable_database(service: RunningService) -> None:
    """Readiness has its own connection; reads wait for a free one, then say 503."""
    pool = service.components.db_pool
    monitor = service.components.db_monitor
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        since = time.time()
        checks: set[float] = set()

        def several_checks() -> bool:
            if monitor.status.checked_at > since:
                checks.add(monitor.status.checked_at)
            return len(checks) >= 3

        await until(several_checks, what="several health checks with the pool held")
        assert (await service.client.get("/readyz")).status_code == 200
        params = {"provider": "a", "symbol": "AAPL", "resolution": "1m"}
        response = await service.client.get("/v1/bars", params=params)
        assert response.status_code == 503
    finally:
        for conn in held:
            await pool.release(conn)
    assert (await service.client.get("/v1/bars", params=params)).status_code == 200


# -- credit and what 201 names --------------------------------------------------

POISON_REFUSED = "symbol NOT LIKE 'POISON%'"
"""What the database refuses in these tests (``refusing``): a fault caused for real."""


async def test_201_names_the_dead_lettered_bars_by_index(
    service: RunningService, database_url: str
) -> None:
    poison_at = [0, 5, 6, 7, 149]
    sent = [wire_bar(i, symbol="POISON" if i in poison_at else "AAPL") for i in range(150)]
    async with refusing(database_url, "bars", POISON_REFUSED):
        response = await post(service.client, payload(*sent), wait=True)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["committed"], body["dead_lettered"]) == (145, 5)
    assert body["dead_lettered_indices"] == poison_at
    stored = {(b["symbol"], b["ts"]) for b in await stored_bars(database_url)}
    assert len(stored) == 145
    assert all(symbol == "AAPL" for symbol, _ in stored)


async def test_201_names_bars_by_their_index_in_the_request_when_a_key_came_twice(
    service: RunningService, database_url: str
) -> None:
    # bar 2 is bar 0 again (a correction): the store writes one row for the key, so
    # the rows after it sit one place earlier than the bars that made them
    sent = [
        bar(0, close="187.1"),
        bar(1),
        bar(0, close="187.2"),
        wire_bar(3, symbol="POISON"),
        bar(4),
        wire_bar(5, symbol="POISON"),
        wire_bar(5, symbol="POISON", close="187.3"),
    ]
    async with refusing(database_url, "bars", POISON_REFUSED):
        response = await post(service.client, payload(*sent), wait=True)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["accepted"], body["committed"], body["dead_lettered"]) == (5, 3, 2)
    # a refused key sent twice: both of its bars are named (neither is stored), so the
    # indices name more bars than `dead_lettered` counts rows
    assert body["dead_lettered_indices"] == [3, 5, 6]
    stored = [(b["symbol"], b["ts"] - T0, str(b["close"])) for b in await stored_bars(database_url)]
    minute = timedelta(minutes=1)
    assert stored == [("AAPL", 0 * minute, "187.2"), ("AAPL", minute, "187.02"),
                      ("AAPL", 4 * minute, "187.02")]  # fmt: skip


async def test_the_client_hands_back_the_refused_bar_of_a_batch_with_a_key_twice(
    service: RunningService, database_url: str
) -> None:
    from market_data_store.client import BarsDeadLetteredError, StoreClient

    poison = partial(wire_bar, symbol="POISON")
    sent = [bar(0), bar(1), bar(0, close="187.3"), poison(3), bar(4), poison(3, close="187.3")]
    async with refusing(database_url, "bars", POISON_REFUSED):
        client = StoreClient(service.base_url, provider="ibkr", follow_feedback=False)
        await client.write(sent)
        with pytest.raises(BarsDeadLetteredError) as lost:
            await client.aclose(timeout=10)
    # both bars of the refused key come back: the earlier one is not stored either
    assert lost.value.indices == [3, 5]
    assert [(b["symbol"], b["close"]) for b in lost.value.bars] == [
        ("POISON", sent[3]["close"]),
        ("POISON", "187.3"),
    ]
    assert len(await stored_bars(database_url)) == 3


async def test_201_names_csv_rows_by_their_index_among_the_bodys_rows(
    service: RunningService, database_url: str
) -> None:
    header = "provider,symbol,resolution,ts,open,high,low,close,volume,delayed,updated_at"
    line = "ibkr,{},1m,2024-01-02T14:{:02d}:00Z,1,2,1,{},10,false,2024-02-01T00:00:{:02d}Z"
    lines = [
        line.format("AAPL", 0, "1.5", 9),  # row 0: older than row 2, which replaces it
        line.format("AAPL", 1, "1.5", 0),
        line.format("AAPL", 0, "1.6", 10),
        "",  # a blank line is no row
        line.format("POISON", 3, "1.5", 0),  # row 3
        line.format("POISON", 4, "1.7", 5),  # row 4: newer than row 5, kept
        line.format("POISON", 4, "1.8", 4),
        line.format("AAPL", 6, "1.5", 0),
    ]
    body = "\n".join([header, *lines]) + "\n"
    async with refusing(database_url, "bars", POISON_REFUSED):
        response = await post(
            service.client, None, wait=True, content=body, headers={"content-type": "text/csv"}
        )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert (answer["accepted"], answer["committed"], answer["dead_lettered"]) == (5, 3, 2)
    assert answer["dead_lettered_indices"] == [3, 4, 5]


async def test_every_answer_carries_a_credit_shared_by_named_producers(
    service: RunningService,
) -> None:
    answers = [
        await post(
            service.client,
            payload(wire_bar(i)),
            wait=i % 2 == 0,
            headers={"x-mds-producer": f"producer-{i}"},
        )
        for i in range(4)
    ]
    assert [a.status_code for a in answers] == [201, 202, 201, 202]
    credits = [a.json()["credit"] for a in answers]
    assert all(isinstance(c, int) and c > 0 for c in credits), credits
    # four producers seen within the last moment share the window: none is offered more
    # than the first one was, alone
    assert credits[-1] <= credits[0]


@pytest.mark.parametrize(
    "value",
    [b"has space", b"x" * 65, b"", "caf\u00e9".encode()],
    ids=["space", "long", "empty", "utf8"],
)
async def test_a_bad_producer_header_is_400(service: RunningService, value: bytes) -> None:
    response = await post(service.client, payload(wire_bar(0)), headers={"x-mds-producer": value})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = response.json()["errors"]
    assert (error["source"], error["key"]) == ("header", "x_mds_producer"), error
