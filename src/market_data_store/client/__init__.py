"""Producer client: what every pipeline writing bars to the store would write by hand.

    async with StoreClient("http://store:8081", provider="ibkr") as store:
        await store.write(bars)          # Core Bar models or dicts of their fields

``StoreClient`` batches bars (``batch_size``, default 5,000), sends them as
MessagePack ``POST /v1/bars`` with at most ``max_in_flight`` (16) requests at once,
and never holds more than ``max_buffered`` bars: ``write`` waits for room, so a
producer faster than the store slows down to its pace. Nothing is dropped
silently: a bar is either committed by the store (``wait_commit``, the default: a
201 means it is in PostgreSQL) or handed back in a ``BatchFailedError`` (its bars
included), raised by the next ``write``, ``flush`` or ``aclose``; bars the
store's database refused come back as ``BarsDeadLetteredError``, exactly those.

Retries (idempotent: the store keeps one row per bar key, so resending is
safe): 503/429 after ``Retry-After`` (randomised to 100-110 %; every request of
the client waits it out), connection errors, timeouts, 408, 5xx and a 202
``pending`` (the commit outlived the store's ``commit_timeout``) with capped
exponential backoff randomised to 50-100 %, all within a per-batch
``deadline`` (then ``DeadlineExceededError``). 413 splits the batch in halves.
Other 4xx: ``BarsRejectedError`` with the problem details, never retried.

Pace (``CreditWindow``): every answer carries the store's ``credit``, how many
bars this client may have sent and not yet had answered; batches larger than that
go in parts. The store sizes it to keep its queue short and never empty and
shares it among the producers it sees (``x-mds-producer``); answered at commit,
the client is clocked by the store's writes. A store that sends no credit gets
the AIMD rate control of ``Throttle`` instead (the level rising to ``soft``/``hard``
or a 503 cuts the rate, ``ok`` grows it back). In both modes ``hard`` stops new
requests until the store says ``ok`` (without the stream, one probe request every
``probe_interval``), and a 503's ``Retry-After`` holds them.

Feedback: a background task follows ``GET /v1/feedback/stream`` (reconnecting
with ``Last-Event-ID``, backing off when it is unavailable). The client's own
coordinators are learned from the ``coordinator_id`` of the store's answers
(202/201/503); until one is known every coordinator on the stream counts. While
the stream is down the levels reported in answers and 503s are used instead;
writes never wait for the stream.

Reads: ``async for bar in store.read_bars(provider, resolution, symbols, start,
end)`` streams a range as Core ``Bar``s (NDJSON, gzip, bounded memory), resuming
from the last bar received when the export breaks; ``await store.latest(provider,
symbols, resolution)`` is the newest bar of each symbol.

``SyncStoreClient`` runs a ``StoreClient`` on an event loop in a thread of its
own, for code without asyncio.
"""

from .errors import (
    BarsDeadLetteredError,
    BarsRejectedError,
    BatchFailedError,
    ClientClosedError,
    DeadlineExceededError,
    InvalidBarError,
    ReadFailedError,
    StoreClientError,
)
from .options import ClientOptions, ClientStats
from .store_client import StoreClient
from .sync import SyncStoreClient
from .throttle import LevelBoard, Throttle
from .wire import Feedback, Level

__all__ = [
    "BarsDeadLetteredError",
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
    "ReadFailedError",
    "StoreClient",
    "StoreClientError",
    "SyncStoreClient",
    "Throttle",
]
