"""Dead-letter queue: items that could not be written, kept on disk as NDJSON.

One record per line, appended and fsynced before ``save`` returns, so a record
survives a crash right after. Items are encoded with msgspec; when the queue is
typed (``DeadLetterQueue[Bar](path)`` or ``item_type=Bar``) replayed items are
decoded back into that type, so Decimal and datetime fields come back exact.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
from pydantic import BaseModel

from .types import T

log = logging.getLogger(__name__)


@dataclass
class DLQRecord(Generic[T]):
    """One dead-lettered batch: when, why, context, and the items themselves."""

    ts: float
    error: str
    metadata: dict[str, Any] = field(default_factory=dict)
    items: list[T] = field(default_factory=list)


@dataclass
class Scan(Generic[T]):
    records: list[DLQRecord[T]]
    unreadable: list[bytes]  # lines that do not decode (torn write, changed item type)


@dataclass
class Claim(Generic[T]):
    """Records taken out of the dead-letter queue for a replay, and their files."""

    records: list[DLQRecord[T]]
    paths: list[Path]
    unreadable: list[bytes]
    duplicates: int = 0  # items found more than once in the claimed files, claimed once


class _Line(msgspec.Struct):
    ts: float
    error: str
    metadata: dict[str, Any]
    items: list[Any]


def _encode_other(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if hasattr(obj, "__dict__"):
        return vars(obj)
    return str(obj)


_encoder = msgspec.json.Encoder(enc_hook=_encode_other, decimal_format="string")
_line_decoder = msgspec.json.Decoder(_Line)


def describe_error(error: BaseException | str) -> str:
    """``"TypeName: message"`` for exceptions, the text itself for strings."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return error


class DeadLetterQueue(Generic[T]):
    """Append-only NDJSON file of failed batches."""

    def __init__(
        self, path: str | os.PathLike[str], mkdirs: bool = True, *, item_type: Any = None
    ) -> None:
        self.path = Path(path)
        if mkdirs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._item_type = item_type
        self._lock = asyncio.Lock()
        # claimed files this process holds: None while their replay runs, then a
        # "finished?" check while their submitted items are still being written
        self._held: dict[Path, Callable[[], bool] | None] = {}

    @property
    def item_type(self) -> Any:
        """The item type to decode into: explicit, else ``DeadLetterQueue[X]``'s X."""
        if self._item_type is not None:
            return self._item_type
        orig = getattr(self, "__orig_class__", None)
        args = getattr(orig, "__args__", ())
        return args[0] if args and not isinstance(args[0], TypeVar) else None

    async def save(
        self,
        items: list[T] | tuple[T, ...],
        error: BaseException | str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Append one record; returns once it is flushed to disk."""
        record = _Line(
            ts=time.time(),
            error=describe_error(error),
            metadata=dict(metadata or {}),
            items=list(items),
        )
        await self._write(_encoder.encode(record) + b"\n")

    async def _write(self, lines: bytes) -> None:
        async with self._lock:
            await asyncio.to_thread(self._append, lines)

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line must not swallow this record
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    async def replay(self, max_records: int = 100) -> list[DLQRecord[T]]:
        """The oldest ``max_records`` records (the file is left as it is)."""
        return (await asyncio.to_thread(self._read, self.path, max_records)).records

    async def count(self) -> int:
        """Number of readable records in the file."""
        return len(await self.records())

    async def records(self) -> list[DLQRecord[T]]:
        """Every readable record, oldest first."""
        return (await self.scan()).records

    async def scan(self) -> Scan[T]:
        """Every record, and the lines that cannot be read back (kept, never dropped)."""
        return await asyncio.to_thread(self._read, self.path, None)

    async def claim(self) -> Claim[T]:
        """Take every record out of the queue for a replay.

        The file is renamed aside (new failures start a fresh file meanwhile);
        claimed files left by an interrupted replay (a crash) are picked up
        again, those of replays still running in this process are not: replays
        may run concurrently, each gets records no other one holds. An item
        found more than once in what is claimed (the same item dead-lettered
        again before a crash) is claimed once, its latest record kept. Hand the
        claim to ``settle`` when the replay is over, whatever happened.
        """
        async with self._lock:
            await self._prune_locked()
            held = self._held
            paths = [
                p
                for p in sorted(self.path.parent.glob(f"{self.path.name}.claimed-*"))
                if p not in held
            ]
            if self.path.exists():
                target = self.path.with_name(f"{self.path.name}.claimed-{time.time_ns()}")
                os.replace(self.path, target)
                paths.append(target)
            for path in paths:
                held[path] = None
        try:
            scans = [await asyncio.to_thread(self._read, path, None) for path in paths]
        except BaseException:
            for path in paths:  # still on disk: the next claim takes them
                held.pop(path, None)
            raise
        records, duplicates = _latest_once([r for scan in scans for r in scan.records])
        unreadable = [raw for scan in scans for raw in scan.unreadable]
        return Claim[T](records, paths, unreadable, duplicates)

    async def settle(
        self,
        claim: Claim[T],
        keep: Sequence[DLQRecord[T]],
        *,
        in_flight: Sequence[DLQRecord[T]] = (),
        finished: Callable[[], bool] | None = None,
    ) -> None:
        """End a replay: write back ``keep`` (records not handed over for writing)
        and the unreadable lines, then drop the claimed files.

        ``in_flight`` are records whose items were handed to a writer that will
        write them or dead-letter them afresh itself (the coordinator), and are not
        finished yet: they do not go back into the queue. Until ``finished()``
        says so they stay on disk in a claimed file of their own, which only a
        claim after a crash picks up again.
        """
        lines = [_encode_record(r) for r in keep]
        lines.extend(raw if raw.endswith(b"\n") else raw + b"\n" for raw in claim.unreadable)
        try:
            async with self._lock:  # no claim or prune sees a half-done settle
                if lines:
                    await asyncio.to_thread(self._append, b"".join(lines))
                if in_flight and finished is not None and not finished():
                    journal = self.path.with_name(f"{self.path.name}.claimed-{time.time_ns()}")
                    payload = b"".join(_encode_record(r) for r in in_flight)
                    await asyncio.to_thread(_write_new, journal, payload)
                    self._held[journal] = finished
                for path in claim.paths:
                    await asyncio.to_thread(path.unlink, missing_ok=True)
        finally:
            for path in claim.paths:
                self._held.pop(path, None)

    async def prune(self) -> None:
        """Delete the claimed files kept for in-flight replayed items that are now
        finished (also done by every ``claim``; the coordinator calls it at stop)."""
        async with self._lock:
            await self._prune_locked()

    async def _prune_locked(self) -> None:
        for path, finished in list(self._held.items()):
            if finished is not None and finished():
                await asyncio.to_thread(path.unlink, missing_ok=True)
                del self._held[path]

    def _read(self, path: Path, max_records: int | None) -> Scan[T]:
        scan = Scan[T]([], [])
        if not path.exists():
            return scan
        item_type = self.item_type
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if max_records is not None and len(scan.records) >= max_records:
                    break
                if not raw.strip():
                    continue
                try:
                    line = _line_decoder.decode(raw)
                    items = line.items
                    if item_type is not None:
                        items = [_decode_item(item, item_type) for item in items]
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    log.warning(
                        "%s:%d: unreadable dead-letter line kept as is: %s", path, lineno, exc
                    )
                    scan.unreadable.append(raw)
                    continue
                scan.records.append(DLQRecord(line.ts, line.error, line.metadata, items))
        return scan


def _encode_record(record: DLQRecord[Any]) -> bytes:
    return (
        _encoder.encode(_Line(record.ts, record.error, record.metadata, list(record.items))) + b"\n"
    )


def _write_new(path: Path, payload: bytes) -> None:
    """Write ``path`` whole and durably: a temporary name, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _latest_once(records: list[DLQRecord[T]]) -> tuple[list[DLQRecord[T]], int]:
    """``records`` with every item kept once, in its latest record (the newest
    error); records left empty are dropped. Returns them and the items dropped."""
    seen: set[bytes] = set()
    kept: list[DLQRecord[T]] = []
    duplicates = 0
    for record in reversed(records):
        items: list[T] = []
        for item in record.items:
            key = _encoder.encode(item)
            if key in seen:
                duplicates += 1
            else:
                seen.add(key)
                items.append(item)
        if len(items) < len(record.items):
            if not items:
                continue
            record = DLQRecord(record.ts, record.error, record.metadata, items)
        kept.append(record)
    kept.reverse()
    return kept, duplicates


def _decode_item(raw: Any, item_type: Any) -> Any:
    if isinstance(item_type, type) and issubclass(item_type, BaseModel):
        return item_type.model_validate(raw)
    return msgspec.convert(raw, item_type, strict=False)
