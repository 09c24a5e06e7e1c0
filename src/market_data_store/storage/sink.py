"""The write coordinator's one sink: bars to ``BarsSink``, the other kinds to ``FactSink``.

One coordinator queues every kind (``Row``): a batch of bars only (the common case) goes
to the bars sink as it is; a mixed batch is split, bars first. Both sinks' writes are
idempotent per key, so a mixed batch that fails after its bars landed is written again
without harm.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from .bars_sink import BarsSink
from .facts import FACT_TABLES, NULL, FactRow, FactSink
from .rows import BarRow

Row = BarRow | FactRow
"""What the write coordinator queues (a bar is an object, a fact row an array: a dead
letter reads back as the one it was)."""


class StoreSink:
    """Satisfies the coordinator's ``Sink[Row]``."""

    def __init__(self, bars: BarsSink, facts: FactSink) -> None:
        self.bars = bars
        self.facts = facts

    async def write(self, batch: Sequence[Row]) -> None:
        bars = [row for row in batch if type(row) is BarRow]
        if len(bars) == len(batch):
            await self.bars.write(bars)
            return
        facts = [row for row in batch if type(row) is FactRow]
        if bars:
            await self.bars.write(bars)
        await self.facts.write(facts)


def decode_row(raw: object) -> Row:
    """A dead-lettered row read back (``ItemDecoder``): an array is a ``FactRow``, an
    object a ``BarRow`` (records from before fact rows existed hold only those). A fact
    row goes into COPY as it is: one that could not have been written by the service (an
    unknown kind, another number of values, a tenant outside the id rule, a control
    character or a lone backslash where COPY text has none) is ``ValueError``: the line
    stays in the file as unreadable, never replayed."""
    if not isinstance(raw, list):
        return msgspec.convert(raw, BarRow, strict=False)
    row = msgspec.convert(raw, FactRow, strict=False)
    table = FACT_TABLES.get(row.kind)
    if table is None or len(row.values) != len(table.names):
        raise ValueError(f"not a row of a known kind: {row.kind!r}, {len(row.values)} values")
    if not _TENANT.fullmatch(row.tenant) or _CONTROL.search(row.provider):
        raise ValueError("a dead-lettered row's tenant or provider is not one the service writes")
    for value in row.values:
        if _CONTROL.search(value) or (value != NULL and "\\" in value.replace("\\\\", "")):
            raise ValueError("a dead-lettered row's value is not COPY text the service writes")
    return row


_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # config.schema.ID_PART
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
