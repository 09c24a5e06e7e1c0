"""What the bridge takes from another replica (``wire.decode_event``): every field of its
JSON type within absolute bounds, ids by the rule of local ones; anything else is a
``WireError`` (the bridge counts and drops it)."""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from market_data_store.config import ConfigError, load_settings
from market_data_store.config.schema import InstanceId
from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback.wire import (
    COORDINATOR_ID,
    MAX_COUNT,
    MAX_EVENT_BYTES,
    MAX_REASON_LENGTH,
    WireError,
    decode_event,
    encode_event,
    instance_of,
)


def remote(**fields: object) -> str:
    event = {"coordinator_id": "other-1/bars", "queue_size": 10, "capacity": 100,
             "level": "soft", "source": "store", "ts": time.time(), **fields}  # fmt: skip
    return json.dumps(event)


@pytest.mark.parametrize(
    "fields",
    [
        {"queue_size": MAX_COUNT, "capacity": MAX_COUNT},
        {"queue_size": 150, "capacity": 100},  # a request larger than the queue went in whole
        {"queue_size": 0, "capacity": 1},
        {"reason": "r" * MAX_REASON_LENGTH},
        {"reason": None, "drain_rate": None, "credit": None},
        {"coordinator_id": "A.b_c-9/bars.v2"},
        {"coordinator_id": f"{'i' * 63}/{'n' * 63}"},
        {"ts": 1_700_000_000},  # an int is a number of seconds too
        {"utilization": 0.1, "something_new": [1, 2]},  # fields of later versions are ignored
    ],
    ids=str,
)
def test_events_within_the_bounds_are_taken(fields: dict[str, object]) -> None:
    event = decode_event(remote(**fields))
    assert event.utilization == event.queue_size / event.capacity
    encode_event(event)  # what the fan-out does with it next


@pytest.mark.parametrize(
    "fields",
    [
        {"queue_size": 10**400},  # its utilization overflowed and stopped the bridge
        {"queue_size": MAX_COUNT + 1},
        {"capacity": MAX_COUNT + 1},
        {"capacity": 10**400},
        {"capacity": 0},
        {"queue_size": -1},
        {"queue_size": 10.0},
        {"queue_size": "10"},
        {"queue_size": True},
        {"queue_size": float("nan")},
        {"ts": float("nan")},
        {"ts": float("inf")},
        {"ts": 0},
        {"ts": 1},
        {"ts": time.time() + 3600},
        {"ts": "1700000000"},
        {"drain_rate": float("nan")},
        {"credit": 10**400},
        {"level": "panic"},
        {"reason": "r" * (MAX_REASON_LENGTH + 1)},  # well within the 4 KB of a message
        {"reason": 5},
        {"source": "s" * 65},
        {"coordinator_id": ["other-1/bars"]},
    ],
    ids=lambda f: str(f)[:60],
)
def test_out_of_bounds_fields_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(WireError):
        decode_event(remote(**fields))


@pytest.mark.parametrize(
    "coordinator_id",
    [
        "atk-0/bars ",  # showed as a second row identical to atk-0/bars
        " atk-0/bars",
        "atk-0/bars\n",
        "atk-0 /bars",
        "atk\u20100/bars",  # a Unicode hyphen
        "atk-0/bärs",
        "atk-0",
        "atk-0/",
        "/bars",
        "atk-0/bars/x",
        "-atk/bars",
        "atk-0/.bars",
        f"{'i' * 64}/bars",
        f"atk-0/{'n' * 64}",
        "",
    ],
    ids=repr,
)
def test_remote_ids_obey_the_rule_of_local_ones(coordinator_id: str) -> None:
    assert not COORDINATOR_ID.fullmatch(coordinator_id)
    with pytest.raises(WireError, match="coordinator_id"):
        decode_event(remote(coordinator_id=coordinator_id))


def test_local_ids_are_made_by_the_same_rule() -> None:
    """The instance id a replica may be given is what the others accept before ``/``."""
    for instance in ("store-0", "A.b_c-9", "i" * 63):
        assert msgspec.convert(instance, InstanceId) == instance
        local = FeedbackEvent.create(f"{instance}/bars", 1, 10, BackpressureLevel.ok)
        assert instance_of(decode_event(encode_event(local)).coordinator_id) == instance
    for bad in ("store-0\n", "store 0", "-store", "i" * 64, "store/0"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, InstanceId)
    with pytest.raises(ConfigError, match=r"server\.instance_id"):
        load_settings({"DATABASE_URL": "postgresql://h/db", "MDS_SERVER_INSTANCE_ID": "store-0\n"})


@pytest.mark.parametrize(
    "body",
    [
        b'{"coordinator_id":"a/bars","reason":"\xff","queue_size":1}',  # not UTF-8
        b'{"extra":' + b"[" * 1900 + b"]" * 1900 + b"}",  # an unknown field, nested deep
    ],
    ids=["not-utf-8", "deep-nesting"],
)
def test_undecodable_text_is_a_wire_error(body: bytes) -> None:
    """Found in the review of issue 18: these raised UnicodeDecodeError and
    RecursionError, which the bridge logged as a bug (an ERROR with a traceback)."""
    assert len(body) <= MAX_EVENT_BYTES
    with pytest.raises(WireError, match="not a FeedbackEvent"):
        decode_event(body)
