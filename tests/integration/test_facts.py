"""Options, quotes, trades, fundamentals and news (issue 20): ingest as JSON and
MessagePack, exact reads, idempotent upserts, every error listed, dead letters and
replay, per tenant. Real service on a real socket, real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from tests.support.facts import KINDS, body, items, query
from tests.support.postgres import refusing
from tests.support.service import RunningService, running_service, service_settings

ADMIN = "admin-token-for-fact-tests"
ALPHA, BETA = "alpha-token-0123456789", "beta-token-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running_service(service_settings(database_url, str(tmp_path))) as svc:
        yield svc


@pytest.fixture
async def tenants(database_url: str, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(
        database_url,
        str(tmp_path),
        ADMIN_TOKEN=ADMIN,
        MDS_AUTH_TENANTS=json.dumps({"alpha": ALPHA, "beta": BETA}),
    )
    async with running_service(settings) as svc:
        yield svc


async def post(
    svc: RunningService, kind: str, payload: Any, *, token: str | None = None, msgpack: bool = False
) -> httpx.Response:
    headers = bearer(token) if token else {}
    if msgpack:
        return await svc.client.post(
            f"/v1/{kind}",
            content=msgspec.msgpack.encode(payload),
            params={"wait": "commit"},
            headers={**headers, "content-type": "application/msgpack"},
        )
    return await svc.client.post(
        f"/v1/{kind}", json=payload, params={"wait": "commit"}, headers=headers
    )


async def read(
    svc: RunningService, kind: str, *, token: str | None = None, **extra: str
) -> list[dict[str, Any]]:
    answer = await svc.client.get(
        f"/v1/{kind}", params=query(kind, **extra), headers=bearer(token) if token else {}
    )
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["count"] == len(page[kind])
    return list(page[kind])


def as_stored(kind: str, sent: dict[str, Any]) -> dict[str, Any]:
    """What a read answers for an item sent (the provider added, absent fields filled)."""
    stored = {"provider": "ibkr", **sent}
    for key, value in list(stored.items()):
        if isinstance(value, str) and value.endswith("Z"):
            stored[key] = value[:-1] + "Z"
    defaults: dict[str, dict[str, Any]] = {
        "options": {"delayed": False},
        "quotes": {"delayed": False},
        "trades": {},
        "fundamentals": {},
        "news": {},
    }
    return {**defaults[kind], **stored}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
async def test_each_kind_round_trips_exactly(
    service: RunningService, kind: str, msgpack: bool
) -> None:
    sent = items(kind, 3)
    answer = await post(service, kind, {"provider": "ibkr", kind: sent}, msgpack=msgpack)
    assert answer.status_code == 201, answer.text
    assert answer.json()["committed"] == 3
    assert answer.json()["coordinator_id"] == "test/bars"  # the one write queue
    assert await read(service, kind) == [as_stored(kind, item) for item in sent]


@pytest.mark.parametrize("kind", KINDS)
async def test_writes_are_idempotent_upserts_on_the_natural_key(
    service: RunningService, database_url: str, kind: str
) -> None:
    assert (await post(service, kind, body(kind, 3))).status_code == 201
    assert (await post(service, kind, body(kind, 3))).status_code == 201  # a retry
    changed = body(kind, 1)
    value = {"options": "bid", "quotes": "bid", "trades": "price", "fundamentals": "eps",
             "news": "sentiment_score"}[kind]  # fmt: skip
    changed[kind][0][value] = "0.5"
    # a key twice in one body: the later one wins
    twice = {"provider": "ibkr", kind: [body(kind, 1)[kind][0], changed[kind][0]]}
    answer = await post(service, kind, twice)
    assert answer.status_code == 201, answer.text
    stored = await read(service, kind)
    assert len(stored) == 3
    assert stored[0][value] == "0.5"
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {kind}") == 3
    finally:
        await conn.close()


async def test_exact_decimals_utc_times_and_text_as_sent(service: RunningService) -> None:
    option = items("options", 1, strike="0.000000000000000001", bid=1.5, ask="1E+2",
                   ts="2024-01-02T09:30:00-05:00", delta=None)[0]  # fmt: skip
    assert (
        await post(service, "options", {"provider": "ibkr", "options": [option]})
    ).status_code == 201
    (stored,) = await read(service, "options")
    assert stored["strike"] == "0.000000000000000001"
    assert stored["bid"] == "1.5"  # a JSON number's own text
    assert stored["ask"] == "100"  # an exponent written out
    assert stored["ts"] == "2024-01-02T14:30:00Z"
    assert stored["delta"] is None
    article = items("news", 1, title='Quote "this", \\ and ünïcode — 📈', symbols=[" aapl "])[0]
    assert (await post(service, "news", {"provider": "ibkr", "news": [article]})).status_code == 201
    (news,) = await read(service, "news", symbol="AAPL")
    assert news["title"] == 'Quote "this", \\ and ünïcode — 📈'
    assert news["symbols"] == ["AAPL"]
    assert await read(service, "news", symbol="MSFT") == []
    trade = items("trades", 1, conditions=['a"b', "c\\d", "{x}", "NULL"], exchange=None)[0]
    assert (
        await post(service, "trades", {"provider": "ibkr", "trades": [trade]})
    ).status_code == 201
    (stored_trade,) = await read(service, "trades")
    assert stored_trade["conditions"] == ['a"b', "c\\d", "{x}", "NULL"]
    assert stored_trade["exchange"] is None


async def test_a_correction_of_spelling_alone_is_stored_and_the_provider_kept_as_sent(
    service: RunningService,
) -> None:
    provider = "a\\b"  # a backslash: escaped for COPY once, stored as sent
    payload = {"provider": provider, "quotes": items("quotes", 1, bid="1.5")}
    assert (await post(service, "quotes", payload)).status_code == 201
    payload = {"provider": provider, "quotes": items("quotes", 1, bid="1.50")}
    assert (await post(service, "quotes", payload)).status_code == 201
    (quote,) = await read(service, "quotes", provider=provider)
    assert (quote["provider"], quote["bid"]) == (provider, "1.50")


async def test_every_problem_of_every_item_is_listed_and_nothing_is_stored(
    service: RunningService,
) -> None:
    bad = [
        {**items("options", 1)[0], "symbol": "A B", "strike": "0", "option_type": "X",
         "expiry": "2025-01-17T00:00:00", "bid": "1e400", "extra": 1},
        {**items("options", 2)[1], "implied_volatility": "-0.1", "volume": -1},
        items("options", 3)[2],
    ]  # fmt: skip
    answer = await post(service, "options", {"provider": "ibkr", "options": bad})
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    found = {(e["index"], e["field"]) for e in answer.json()["errors"]}
    assert found == {
        (0, "symbol"), (0, "strike"), (0, "option_type"), (0, "expiry"), (0, "bid"),
        (0, "extra"), (1, "implied_volatility"), (1, "volume"),
    }  # fmt: skip
    assert await read(service, "options") == []
    cases: dict[str, dict[str, Any]] = {
        "quotes": {"timestamp": None},
        "trades": {"trade_id": "", "size": 1.5, "conditions": ["x"] * 17},
        "fundamentals": {"asof": "2024-13-01", "eps": "abc"},
        "news": {"url": "ftp://x", "title": "a\nb", "sentiment_score": "1.5",
                 "symbols": ["OK", "not ok"]},
    }  # fmt: skip
    for kind, wrong in cases.items():
        answer = await post(service, kind, body(kind, 2, **wrong))
        assert answer.status_code == 422, (kind, answer.text)
        fields = {e["field"] for e in answer.json()["errors"] if e["index"] == 1}
        assert fields == set(wrong), kind


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{", 400),
        (b"[]", 422),
        (b'{"provider": "ibkr"}', 422),
        (b'{"provider": "ibkr", "quotes": []}', 422),
        (b'{"provider": "ibkr", "bars": []}', 422),
    ],
)
async def test_bad_bodies_are_4xx_problems(
    service: RunningService, payload: bytes, status: int
) -> None:
    answer = await service.client.post(
        "/v1/quotes", content=payload, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_the_database_refuses_what_validation_refuses(
    service: RunningService, database_url: str
) -> None:
    statements = [
        "INSERT INTO options (provider, symbol, expiry, strike, option_type, ts) VALUES "
        "('p', 'A', now(), 0, 'C', now())",
        "INSERT INTO options (provider, symbol, expiry, strike, option_type, ts) VALUES "
        "('p', 'A', now(), 1, 'X', now())",
        "INSERT INTO quotes (provider, symbol, timestamp, bid_size) VALUES ('p', 'A', now(), -1)",
        "INSERT INTO trades (provider, symbol, ts, trade_id, price, size) VALUES "
        "('p', 'A', now(), '', 1, 1)",
        "INSERT INTO fundamentals (provider, symbol, asof, eps) VALUES ('p', 'A', now(), 1e25)",
        "INSERT INTO news (provider, article_id, title, url, published_at, sentiment_score) "
        "VALUES ('p', 'a', 't', 'https://x', now(), 2)",
        "INSERT INTO news (provider, article_id, title, url, published_at) "
        "VALUES ('p', 'a', 't', 'ftp://x', now())",
    ]
    conn = await asyncpg.connect(database_url)
    try:
        for statement in statements:
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_tenants_see_only_their_own_rows_through_every_route(
    tenants: RunningService, database_url: str, kind: str
) -> None:
    # the same keys for both tenants: two rows each, never one
    assert (await post(tenants, kind, body(kind, 2), token=ALPHA)).status_code == 201
    assert (await post(tenants, kind, body(kind, 3), token=BETA, msgpack=True)).status_code == 201
    assert len(await read(tenants, kind, token=ALPHA)) == 2
    assert len(await read(tenants, kind, token=BETA)) == 3
    for token in (None, "Bearer", ALPHA + "x", ADMIN):
        headers = {} if token is None else bearer(token)
        answer = await tenants.client.get(f"/v1/{kind}", params=query(kind), headers=headers)
        assert answer.status_code == 401
        answer = await tenants.client.post(f"/v1/{kind}", json=body(kind), headers=headers)
        assert answer.status_code == 401
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(f"SELECT tenant_id, count(*) FROM {kind} GROUP BY 1 ORDER BY 1")
        assert [tuple(r) for r in stored] == [("alpha", 2), ("beta", 3)]
        reader = await conn.fetchval("SELECT name FROM mds_reader_role")
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {reader}")
            assert await conn.fetchval(f"SELECT count(*) FROM {kind}") == 0  # no tenant set
            await conn.execute("SET LOCAL app.tenant_id = 'alpha'")
            assert await conn.fetchval(f"SELECT count(*) FROM {kind}") == 2
            assert await conn.fetchval(f"SELECT count(*) FROM {kind} WHERE tenant_id = 'beta'") == 0
    finally:
        await conn.close()


async def test_attack_pass_nothing_crosses_tenants(tenants: RunningService) -> None:
    hostile = "x' OR tenant_id <> 'alpha' --"
    # beta's rows under the provider alpha uses: providers are not tenants
    assert (await post(tenants, "trades", body("trades", 2), token=BETA)).status_code == 201
    answer = await post(
        tenants, "trades", body("trades", 1, provider=hostile, exchange=hostile[:16],
                                trade_id=hostile, conditions=[hostile[:16]]), token=ALPHA
    )  # fmt: skip
    assert answer.status_code == 422  # exchange, trade_id and condition hold spaces
    answer = await post(
        tenants, "trades", body("trades", 1, provider=hostile, trade_id="x'--;DROP"), token=ALPHA
    )
    assert answer.status_code == 201
    assert await read(tenants, "trades", token=ALPHA) == []
    assert len(await read(tenants, "trades", token=ALPHA, provider=hostile)) == 1
    assert await read(tenants, "trades", token=BETA, provider=hostile) == []
    article = items("news", 1, title=hostile, article_id="a'--", url="https://x/'--")
    payload = {"provider": "ibkr", "news": article}
    assert (await post(tenants, "news", payload, token=ALPHA)).status_code == 201
    assert (await read(tenants, "news", token=ALPHA))[0]["title"] == hostile
    assert await read(tenants, "news", token=BETA) == []
    for key in ("symbol", "start", "end"):
        answer = await tenants.client.get(
            "/v1/quotes", params={**query("quotes"), key: hostile}, headers=bearer(ALPHA)
        )
        assert answer.status_code == 400, key
    answer = await tenants.client.get(
        "/v1/trades",
        params={**query("trades"), "tenant": "beta", "tenant_id": "beta"},
        headers={**bearer(ALPHA), "x-tenant": "beta"},
    )
    assert answer.status_code == 200
    assert answer.json()["trades"] == []


async def test_a_refused_row_is_named_by_its_items_index_when_a_key_came_twice(
    tenants: RunningService, database_url: str
) -> None:
    first, second = items("quotes", 2)
    (poison,) = items("quotes", 1, symbol="POISON")
    # item 2 is item 0 again: one row for their key, so the refused row is the third
    # row but the fourth item; and item 4 is item 3 again, refused with it
    sent = [first, second, first, poison, {**poison, "bid": "187.02"}]
    async with refusing(database_url, "quotes", "symbol <> 'POISON'"):
        answer = await post(tenants, "quotes", {"provider": "ibkr", "quotes": sent}, token=BETA)
    assert answer.status_code == 201
    assert (answer.json()["accepted"], answer.json()["committed"]) == (3, 2)
    assert answer.json()["dead_lettered"] == 1
    assert answer.json()["dead_lettered_indices"] == [3, 4]


async def test_a_row_the_database_refuses_is_dead_lettered_and_replayed_as_its_tenants(
    tenants: RunningService, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # a fault we can cause for real: a constraint the service does not know of
        await conn.execute("ALTER TABLE quotes ADD CONSTRAINT no_poison CHECK (symbol <> 'POISON')")
        payload = {
            "provider": "ibkr",
            "quotes": items("quotes", 2) + items("quotes", 1, symbol="POISON"),
        }
        answer = await post(tenants, "quotes", payload, token=BETA)
        assert answer.status_code == 201
        assert answer.json()["committed"] == 2
        assert answer.json()["dead_lettered_indices"] == [2]
        dlq = (await tenants.client.get("/admin/dlq", headers=bearer(ADMIN))).json()
        (record,) = dlq["recent"]
        (item,) = record["items"]
        assert "no_poison" in record["error"]
        assert item["kind"] == "quotes"
        assert item["tenant"] == "beta"
        assert item["columns"]["symbol"] == "POISON"
        assert item["columns"]["ask_size"] == "200"
        await conn.execute("ALTER TABLE quotes DROP CONSTRAINT no_poison")
        replay = await tenants.client.post("/admin/dlq/replay", headers=bearer(ADMIN))
        assert replay.json()["written"] == 1
        poison = await read(tenants, "quotes", token=BETA, symbol="POISON")
        assert [q["bid"] for q in poison] == ["187.01"]
        assert await read(tenants, "quotes", token=ALPHA, symbol="POISON") == []
    finally:
        await conn.close()


async def test_bars_and_other_kinds_share_the_queue_and_both_land(
    service: RunningService,
) -> None:
    from tests.support.bars import wire_bars

    bars = {"provider": "ibkr", "bars": wire_bars(5)}
    answers = [
        service.client.post("/v1/bars", json=bars, params={"wait": "commit"}),
        *(post(service, kind, body(kind, 5)) for kind in KINDS),
    ]
    import asyncio

    for answer in await asyncio.gather(*answers):
        assert answer.status_code == 201, answer.text
    for kind in KINDS:
        assert len(await read(service, kind)) == 5
