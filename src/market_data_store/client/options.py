"""What ``StoreClient`` takes (``ClientOptions``) and what it counts (``ClientStats``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypedDict

import httpx

from .wire import Feedback


@dataclass(slots=True)
class ClientStats:
    """Counters of one client (plain integers; a copy is handed out)."""

    bars_written: int = 0  # taken by write()
    bars_sent: int = 0  # in batches that went out (each bar counted once)
    bars_accepted: int = 0  # the store answered 202/201 for them (its count)
    bars_committed: int = 0  # wait_commit: 201 said written
    bars_dead_lettered: int = 0  # wait_commit: 201 said dead-lettered (handed back as failed)
    commits_pending: int = 0  # wait_commit: 202 pending answers (the bars were sent again)
    bars_failed: int = 0  # in batches given up (BatchFailedError)
    batches_sent: int = 0
    batches_failed: int = 0
    requests: int = 0  # every attempt
    retries: int = 0  # attempts after the first of a batch
    refused: int = 0  # 503 (and 429) answers
    transport_errors: int = 0  # connection errors and timeouts
    splits: int = 0  # 413 answers that split a batch in two
    throttled_seconds: float = 0.0  # requests held back (rate, pause, Retry-After), summed
    write_wait_seconds: float = 0.0  # write() waiting for buffer room, summed
    feedback_events: int = 0  # stream events received
    stream_connects: int = 0
    unreported_discarded: int = 0  # failures beyond MAX_UNREPORTED (still counted above)
    bars_read: int = 0  # yielded by read_bars
    read_requests: int = 0  # every GET of read_bars and latest
    read_retries: int = 0  # of those, asked again (a broken export resumed, a 503 waited out)


class ClientOptions(TypedDict, total=False):
    """``StoreClient``'s keyword options (also taken by ``SyncStoreClient``)."""

    batch_size: int
    max_buffered: int | None
    max_in_flight: int
    linger: float
    request_timeout: float
    deadline: float
    initial_backoff: float
    max_backoff: float
    wait_commit: bool
    follow_feedback: bool
    min_rate: float
    max_rate: float | None
    decrease_factor: float
    increase_fraction: float
    adjust_interval: float
    probe_interval: float
    max_hold: float
    stream_idle_timeout: float
    on_feedback: Callable[[Feedback], None] | None
    headers: Mapping[str, str] | None
    token: str | None
    transport: httpx.AsyncBaseTransport | None
