"""Producer client: what every pipeline writing bars to the store would write by hand.

    async with StoreClient("http://store:8081", provider="ibkr") as store:
        await store.write(bars)          # Core Bar models or dicts of their fields

``StoreClient`` batches bars (``batch_size``, default 5,000), sends them as
MessagePack ``POST /v1/bars`` with at most ``max_in_flight`` requests at once,
and never holds more than ``max_buffered`` bars: ``write`` waits for room, so a
producer faster than the store slows down to its pace. Nothing is dropped
silently: a batch is either accepted by the store or handed back in a
``BatchFailedError`` (its bars included), raised by the next ``write``,
``flush`` or ``aclose``.

Retries (idempotent: the store keeps one row per bar key, so resending is
safe): 503/429 after ``Retry-After`` (randomised to 100-110 %; every request of
the client waits it out), connection errors, timeouts, 408 and 5xx with capped
exponential backoff randomised to 50-100 %, all within a per-batch
``deadline`` (then ``DeadlineExceededError``). 413 splits the batch in halves.
Other 4xx: ``BarsRejectedError`` with the problem details, never retried.

Throttling (AIMD on bars/s, ``Throttle``):

- unlimited until the store first pushes back;
- congestion cuts the rate, once per ``adjust_interval`` (1 s; the deepest cut of
  the signals within it), never below ``min_rate``: the level rising to ``hard``
  or a 503 to ``decrease_factor`` (0.5) x the rate, rising to ``soft`` to
  sqrt(``decrease_factor``) (0.71) x (x the limit; x the rate actually sent over
  the last 2 s when there is no limit yet or less than half of it is used);
- staying ``soft``: cut again every 2 s while the queue size in the answers grows;
- ``hard``: no new request starts until the store says ``ok`` (requests already
  sent complete); without the stream, one probe request every ``probe_interval``;
- ``ok``: every second the rate grows back half the way to the pre-cut rate (at
  least ``increase_fraction``, 10 %, of it); beyond it by 10 % of it, the step
  doubling each second (x2 ... x32) until the next cut; up to ``max_rate``, and
  only while the producer uses at least half of its limit.

Feedback: a background task follows ``GET /v1/feedback/stream`` (reconnecting
with ``Last-Event-ID``, backing off when it is unavailable). The client's own
coordinators are learned from the ``coordinator_id`` of the store's answers
(202/201/503); until one is known every coordinator on the stream counts. While
the stream is down the levels reported in answers and 503s are used instead;
writes never wait for the stream.

``SyncStoreClient`` runs a ``StoreClient`` on an event loop in a thread of its
own, for code without asyncio.
"""

from .errors import (
    BarsRejectedError,
    BatchFailedError,
    ClientClosedError,
    DeadlineExceededError,
    InvalidBarError,
    StoreClientError,
)
from .options import ClientOptions, ClientStats
from .store_client import StoreClient
from .sync import SyncStoreClient
from .throttle import LevelBoard, Throttle
from .wire import Feedback, Level

__all__ = [
    "BarsRejectedError",
    "BatchFailedError",
    "ClientClosedError",
    "ClientOptions",
    "ClientStats",
    "DeadlineExceededError",
    "Feedback",
    "InvalidBarError",
    "Level",
    "LevelBoard",
    "StoreClient",
    "StoreClientError",
    "SyncStoreClient",
    "Throttle",
]
