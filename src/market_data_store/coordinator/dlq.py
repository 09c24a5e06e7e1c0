"""Dead-letter queue: items that could not be written, kept on disk as NDJSON.

One record per line, appended and fsynced before ``save`` returns, so a record
survives a crash right after. Items are encoded with msgspec; when the queue is
typed (``DeadLetterQueue[Bar](path)`` or ``item_type=Bar``) replayed items are
decoded back into that type, so Decimal and datetime fields come back exact.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    # held by a replay of this process: being re-submitted, or re-submitted and not
    # written yet (those rejected again come back into ``records`` with their new error)
    in_flight: list[DLQRecord[T]] = field(default_factory=list)


@dataclass
class Claim(Generic[T]):
    """Records taken out of the dead-letter queue for a replay, and their files."""

    records: list[DLQRecord[T]]
    paths: list[Path]
    unreadable: list[bytes]
    duplicates: int = 0  # items found more than once in the claimed files, claimed once


@dataclass
class _Hold:
    """A claimed file this process holds, out of reach of ``claim``."""

    finished: Callable[[], bool] | None  # None while the replay that claimed it runs
    delete: bool = True  # once finished: delete it (a journal), or let go of it


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


class ItemDecoder(Generic[T]):
    """An ``item_type`` that decodes items itself (``decode``: JSON builtins -> item;
    ``ValueError`` or ``msgspec.ValidationError`` for one it cannot read), e.g. for a
    union msgspec cannot tell apart by type alone."""

    def __init__(self, decode: Callable[[Any], T]) -> None:
        self.decode = decode


_encoder = msgspec.json.Encoder(enc_hook=_encode_other, decimal_format="string")
_line_decoder = msgspec.json.Decoder(_Line)


def describe_error(error: BaseException | str) -> str:
    """``"TypeName: message"`` for exceptions, the text itself for strings."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return error


class DeadLetterQueue(Generic[T]):
    """Append-only NDJSON file of failed batches.

    One process owns a path: claimed files (``<file>.claimed-*``) it does not hold
    are taken as left by an earlier run: ``scan`` counts them as records, ``open``
    (by the owner at start, else by the first ``claim``) folds them back into the file.
    Processes sharing a path would take each other's claimed files: give each its
    own.
    """

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
        self._held: dict[Path, _Hold] = {}
        self._opened = False

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
            try:
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a torn last line must not swallow this record
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                # disk full midway: leave no part of a record behind
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    async def open(self) -> None:
        """Fold claimed files left by an earlier run of the process (a crash, or a
        settle that failed) back into the file, once, each item kept once with its
        latest record; remove half-written temporary files. Idempotent; meant for
        the queue's owner at start, and done by the first ``claim`` anyway."""
        async with self._lock:
            await self._open_locked()

    async def _open_locked(self) -> None:
        if not self._opened:
            await asyncio.to_thread(self._fold, set(self._held))
            self._opened = True

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
        """Every record a claim would take, the lines that cannot be read back (kept,
        never dropped), and the records held by this queue's replays (``in_flight``).
        Changes no file."""
        async with self._lock:  # no claim or settle moves records between files meanwhile
            held: set[Path] = set()
            finished: set[Path] = set()  # journals the next prune deletes
            for path, hold in self._held.items():
                if hold.finished is None or not hold.finished():
                    held.add(path)
                elif hold.delete:
                    finished.add(path)
            return await asyncio.to_thread(self._scan_all, held, finished)

    def _scan_all(self, held: set[Path], finished: set[Path]) -> Scan[T]:
        claimed = [p for p in self._claimed_files() if p not in finished]
        loose = [self._read(p, None) for p in claimed if p not in held]
        main = self._read(self.path, None)
        in_flight = [self._read(p, None) for p in claimed if p in held]
        if loose:  # left by an earlier run or a failed settle: the next claim takes them
            records, _ = _latest_once([r for s in [*loose, main] for r in s.records])
            unreadable = _unique([raw for s in [*loose, main] for raw in s.unreadable])
        else:
            records, unreadable = main.records, main.unreadable
        held_records, _ = _latest_once([r for s in in_flight for r in s.records])
        return Scan[T](records, unreadable, held_records)

    def _claimed_files(self) -> list[Path]:
        """``<file>.claimed-*`` (a prefix match: the name may hold glob characters)."""
        prefix = f"{self.path.name}.claimed-"
        try:
            entries = list(os.scandir(self.path.parent))
        except FileNotFoundError:
            return []
        return sorted(
            self.path.parent / e.name
            for e in entries
            if e.name.startswith(prefix) and e.is_file(follow_symlinks=False)
        )

    def _fold(self, held: set[Path]) -> None:
        name = self.path.name
        parent = self.path.parent
        try:
            entries = list(os.scandir(parent))
        except FileNotFoundError:
            return
        for entry in entries:  # temporaries of a write cut short: never renamed, not data
            if entry.name == f".{name}.tmp" or (
                entry.name.startswith(f".{name}.claimed-") and entry.name.endswith(".tmp")
            ):
                (parent / entry.name).unlink(missing_ok=True)
        claimed = [p for p in self._claimed_files() if p not in held]
        if not claimed:
            return
        scans = [self._read(p, None) for p in [*claimed, self.path]]
        records, duplicates = _latest_once([r for s in scans for r in s.records])
        unreadable = _unique([raw for s in scans for raw in s.unreadable])
        payload = b"".join(_encode_record(r) for r in records)
        payload += b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for raw in unreadable)
        _write_new(self.path, payload)
        for path in claimed:  # a crash before this: the next open folds them again, once
            path.unlink(missing_ok=True)
        log.warning(
            "%s: %d claimed file(s) of an earlier run folded back in (%d records, "
            "%d duplicate items dropped)",
            self.path,
            len(claimed),
            len(records),
            duplicates,
        )

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
            await self._open_locked()
            await self._prune_locked()
            held = self._held
            paths = [p for p in self._claimed_files() if p not in held]
            if self.path.exists():
                target = self.path.with_name(f"{self.path.name}.claimed-{time.time_ns()}")
                os.replace(self.path, target)
                paths.append(target)
            for path in paths:
                held[path] = _Hold(None)
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
        says so they stay on disk in a claimed file of their own, which only the
        next start (after a crash) folds back into the file.

        If this fails (disk full), the claimed files stay held until ``finished()``
        - their in-flight items must not be claimed again while the writer has
        them - and are then let go of: the next claim takes them again.
        """
        lines = [_encode_record(r) for r in keep]
        lines.extend(raw if raw.endswith(b"\n") else raw + b"\n" for raw in claim.unreadable)
        done = False
        try:
            async with self._lock:  # no claim or prune sees a half-done settle
                if lines:
                    await asyncio.to_thread(self._append, b"".join(lines))
                if in_flight and finished is not None and not finished():
                    journal = self.path.with_name(f"{self.path.name}.claimed-{time.time_ns()}")
                    payload = b"".join(_encode_record(r) for r in in_flight)
                    await asyncio.to_thread(_write_new, journal, payload)
                    self._held[journal] = _Hold(finished)
                for path in claim.paths:
                    await asyncio.to_thread(path.unlink, missing_ok=True)
                done = True
        finally:
            hold = not done and bool(in_flight) and finished is not None
            for path in claim.paths:
                if hold:
                    assert finished is not None
                    self._held[path] = _Hold(finished, delete=False)
                else:
                    self._held.pop(path, None)

    async def prune(self) -> None:
        """Delete the claimed files kept for in-flight replayed items that are now
        finished (also done by every ``claim``; the coordinator calls it at stop)."""
        async with self._lock:
            await self._prune_locked()

    async def _prune_locked(self) -> None:
        for path, hold in list(self._held.items()):
            if hold.finished is not None and hold.finished():
                if hold.delete:
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
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _unique(lines: list[bytes]) -> list[bytes]:
    return list(dict.fromkeys(lines))


def _latest_once(records: list[DLQRecord[T]]) -> tuple[list[DLQRecord[T]], int]:
    """``records`` with every item kept once, in its latest record (the newest
    error, by ``ts``: a replay writes back old records after newer ones); records
    left empty are dropped. Returns them, oldest first, and the items dropped."""
    seen: set[bytes] = set()
    kept: list[DLQRecord[T]] = []
    duplicates = 0
    oldest_first = sorted(records, key=lambda r: r.ts)  # stable: equal ts keep file order
    for record in reversed(oldest_first):
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
    if isinstance(item_type, ItemDecoder):
        return item_type.decode(raw)
    if isinstance(item_type, type) and issubclass(item_type, BaseModel):
        return item_type.model_validate(raw)
    return msgspec.convert(raw, item_type, strict=False)
