"""The extension fields of our events (``drain_rate``, ``credit``) on the wire: sent when
set, bounded when another replica sends them."""

from __future__ import annotations

import json
import time

import pytest
from market_data_core.telemetry import FeedbackEvent as CoreFeedbackEvent

from market_data_store.coordinator import BackpressureLevel, FeedbackEvent
from market_data_store.feedback.wire import WireError, decode_event, encode_event


def remote(**fields: object) -> str:
    event = {"coordinator_id": "other/bars", "queue_size": 10, "capacity": 100,
             "level": "ok", "source": "store", "ts": time.time(), **fields}  # fmt: skip
    return json.dumps(event)


def test_our_extension_fields_round_trip_and_still_validate_as_core() -> None:
    event = FeedbackEvent.create(
        "s/bars", 10, 100, BackpressureLevel.soft, drain_rate=1234.5, credit=800
    )
    data = encode_event(event)
    assert CoreFeedbackEvent.model_validate_json(data).queue_size == 10
    back = decode_event(data)
    assert (back.drain_rate, back.credit) == (1234.5, 800)
    plain = json.loads(encode_event(FeedbackEvent.create("s/bars", 0, 1, BackpressureLevel.ok)))
    assert "credit" not in plain
    assert "drain_rate" not in plain


@pytest.mark.parametrize(
    "fields",
    [
        {"credit": -1},
        {"credit": 10**10},
        {"credit": 1.5},
        {"drain_rate": -1},
        {"drain_rate": 1e300},
        {"drain_rate": "NaN"},
    ],
    ids=str,
)
def test_out_of_bounds_extension_fields_from_a_replica_are_refused(
    fields: dict[str, object],
) -> None:
    with pytest.raises(WireError):
        decode_event(remote(**fields))
