"""The aggregators' flush, one partition per transaction, and the reads of the totals.

The flush is what makes the pipeline exactly once: the partition's stored offset is locked and
checked against the one this process started from, the event rows and the totals are written, and
the offset advances, all in one transaction. A different stored offset means another process owns
the partition now (or did in between): nothing is written and the caller must re-read and re-seek.
Records with an idempotency id are counted only if their id is claimed in that transaction
(see `_ids`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Final

import asyncpg

from distcount_codec import INT64_MAX, INT64_MIN
from distcount_store._errors import mapped
from distcount_store._ids import Conn, claim_ids

_LOCK_OFFSET = """
SELECT next_offset FROM consumer_offsets
WHERE group_id = $1 AND topic = $2 AND partition = $3
FOR UPDATE
"""
# Moving the offset past a stalled one means the batch that stalled the partition is counted
# (or skipped on purpose): its stall row goes in the same statement.
_PASSED_STALL = """
WITH passed AS (
    DELETE FROM partition_stalls
    WHERE group_id = $1 AND topic = $2 AND partition = $3 AND stalled_offset < $4
)
"""
_INSERT_OFFSET = (
    _PASSED_STALL
    + """
INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, as_of)
VALUES ($1, $2, $3, $4, $5)
"""
)
_UPDATE_OFFSET = (
    _PASSED_STALL
    + """
UPDATE consumer_offsets
SET next_offset = $4, as_of = greatest(as_of, $5), updated_at = now()
WHERE group_id = $1 AND topic = $2 AND partition = $3
"""
)
# keys arrive sorted: two transactions touching the same keys lock them in the same order
_UPSERT_TOTALS_WIDE = """
INSERT INTO counter_totals AS t (key, value)
SELECT key, delta FROM unnest($1::text[], $2::numeric[]) AS d(key, delta)
ON CONFLICT (key) DO UPDATE SET value = t.value + excluded.value, updated_at = now()
"""
# the same with a bigint array, for the usual sums that fit in 64 bits: it encodes far faster
_UPSERT_TOTALS = _UPSERT_TOTALS_WIDE.replace("$2::numeric[]", "$2::bigint[]")
# The event rows go by COPY FROM STDIN (which needs no more than INSERT on the table), in its
# text format: chunks of lines are cheap to build, a delta of any size is its decimal digits
# (as exact as numeric, with no 64-bit fast path to choose), and the server parses the rows
# with no statement to plan or array to unpack.
_EVENT_COLUMNS: Final = ["key", "bucket_start", "delta"]
_COPY_CHUNK_ROWS: Final = 5000
# what COPY's text format reads as other than itself: a backslash starts an escape, a tab ends
# a column, a newline or a carriage return ends a row
_COPY_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_READ_OFFSETS = """
SELECT partition, next_offset FROM consumer_offsets
WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])
"""


@dataclass(frozen=True)
class PartitionFlush:
    """What one partition's flush writes: deltas per bucket start (ms) and key, up to an offset."""

    group_id: str
    topic: str
    partition: int
    expected_offset: int | None  # what this process read (or last wrote); None: no row yet
    next_offset: int
    deltas: Mapping[int, Mapping[str, int]]
    # a time before which every record of the partition acknowledged to a producer is below
    # `next_offset` (None: nothing new to say); it never moves back
    as_of: datetime | None = None
    # the records with an id: id -> (bucket start ms, key, value), each counted only if its id
    # is not claimed within the last `id_window_s` seconds
    keyed: Mapping[str, tuple[int, str, int]] = field(default_factory=dict)
    id_window_s: int = 86_400


@dataclass(frozen=True)
class Written:
    """A committed flush: its event rows, and the records with an id it did not count because
    the id was claimed before (`conflicting` of them with another increment than the first)."""

    rows: int
    repeated: int = 0
    conflicting: int = 0


@dataclass(frozen=True)
class Fenced:
    """The stored offset is not the expected one: another process flushed this partition."""

    stored_offset: int | None


async def flush_partition(conn: Conn, flush: PartitionFlush) -> Fenced | Written:
    """Write one partition's deltas and advance its offset in one transaction; on success, the
    number of event rows written (deltas that summed to zero write none) and of the records
    with an id it did not count.

    The deltas are read while the transaction runs (their rows stream to the server a chunk
    at a time), so they must not change until this returns: the aggregator folds and flushes
    under one lock."""
    ident = (flush.group_id, flush.topic, flush.partition)
    with mapped(f"flushing partition {flush.partition}"):
        return await _flush(conn, flush, ident)


async def _flush(
    conn: Conn, flush: PartitionFlush, ident: tuple[str, str, int]
) -> Fenced | Written:
    try:
        async with conn.transaction():
            stored = await conn.fetchval(_LOCK_OFFSET, *ident)
            if stored != flush.expected_offset:
                return Fenced(stored)
            parts = [flush.deltas]
            repeated = conflicting = 0
            if flush.keyed:
                claimed = await claim_ids(conn, flush.keyed, flush.id_window_s)
                repeated, conflicting = claimed.repeated, claimed.conflicting
                if claimed.fresh:
                    parts.append(_bucketed(claimed.fresh))
            rows = await _write_deltas(conn, parts) if any(parts) else 0
            if stored is None:
                await conn.execute(_INSERT_OFFSET, *ident, flush.next_offset, flush.as_of)
            else:
                await conn.execute(_UPDATE_OFFSET, *ident, flush.next_offset, flush.as_of)
    except asyncpg.UniqueViolationError:
        # another process inserted the partition's first row between our read and our insert
        return Fenced(await read_offset(conn, flush.group_id, flush.topic, flush.partition))
    return Written(rows, repeated, conflicting)


Deltas = Mapping[int, Mapping[str, int]]


def _bucketed(entries: list[tuple[int, str, int]]) -> dict[int, dict[str, int]]:
    """(bucket start, key, value) entries as deltas per bucket and key."""
    deltas: dict[int, dict[str, int]] = {}
    for bucket_start, key, value in entries:
        bucket = deltas.setdefault(bucket_start, {})
        bucket[key] = bucket.get(key, 0) + value
    return deltas


async def _write_deltas(conn: Conn, parts: list[Deltas]) -> int:
    """The event rows of every part, then the totals; the number of event rows (a delta of 0,
    increments that cancelled out within a bucket, leaves none). A (bucket, key) in two parts
    gets a row from each: every row is a delta."""
    status = await conn.copy_to_table(
        "counter_events", source=_event_chunks(parts), columns=_EVENT_COLUMNS, format="text"
    )
    rows = int(status.rpartition(" ")[2])  # "COPY <rows>"
    if rows:
        keys, sums = _totals(parts)
        if keys:
            wide = _needs_numeric(sums)
            await conn.execute(_UPSERT_TOTALS_WIDE if wide else _UPSERT_TOTALS, keys, sums)
    return rows


async def _event_chunks(parts: list[Deltas]) -> AsyncIterator[bytes]:
    """The event rows in COPY's text format, `_COPY_CHUNK_ROWS` at a time: the event loop gets
    a turn between chunks, and a large flush never holds all its rows as text at once."""
    for bucket_start_ms, bucket in ((b, keys) for part in parts for b, keys in part.items()):
        stamp = bucket_start_text(bucket_start_ms)
        entries = iter(bucket.items())
        while chunk := list(islice(entries, _COPY_CHUNK_ROWS)):
            if text := copy_text(chunk, stamp):
                yield text


def copy_text(entries: list[tuple[str, int]], stamp: str) -> bytes:
    """`key<TAB>stamp<TAB>delta` lines for the entries whose delta is not 0, in COPY's text
    format: a key holding a character that format reads as other than itself is escaped."""
    lines = [f"{key}\t{stamp}\t{delta}\n" for key, delta in entries if delta]
    text = "".join(lines)
    rows = len(lines)
    # one scan each, in C, instead of a look at every key: keys needing escapes are rare
    if "\\" in text or "\r" in text or text.count("\t") != 2 * rows or text.count("\n") != rows:
        text = "".join(
            f"{key.translate(_COPY_ESCAPES)}\t{stamp}\t{delta}\n" for key, delta in entries if delta
        )
    return text.encode()


def bucket_start_text(bucket_start_ms: int) -> str:
    """A bucket's start as timestamptz input: exact to the millisecond, in UTC."""
    return (_EPOCH + timedelta(milliseconds=bucket_start_ms)).isoformat()


def _totals(parts: list[Deltas]) -> tuple[list[str], list[int]]:
    """(keys, sums): each key's sum over the buckets of every part, for the keys whose sum is
    not 0, in key order (code points, which is also the byte order of their UTF-8)."""
    buckets = [bucket for part in parts for bucket in part.values()]
    if len(buckets) == 1:
        (totals,) = buckets  # one bucket: a key appears once
    else:
        summed: dict[str, int] = {}
        get = summed.get
        for bucket in buckets:
            for key, delta in bucket.items():
                summed[key] = get(key, 0) + delta
        totals = summed
    if 0 in totals.values():
        keys = sorted(key for key, total in totals.items() if total)
    else:
        keys = sorted(totals)
    return keys, list(map(totals.__getitem__, keys))


def _needs_numeric(values: list[int]) -> bool:
    return bool(values) and (max(values) > INT64_MAX or min(values) < INT64_MIN)


async def read_offset(conn: Conn, group_id: str, topic: str, partition: int) -> int | None:
    offsets = await read_offsets(conn, group_id, topic, [partition])
    return offsets.get(partition)


async def read_offsets(
    conn: Conn, group_id: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """partition -> stored next offset, for the partitions that have one."""
    with mapped(f"reading the stored offsets of {topic}"):
        rows = await conn.fetch(_READ_OFFSETS, group_id, topic, list(partitions))
    return {row["partition"]: row["next_offset"] for row in rows}


@dataclass(frozen=True)
class Total:
    key: str
    value: int
    updated_at: datetime


async def read_total(conn: Conn | asyncpg.Pool, key: str) -> Total | None:
    with mapped(f"reading counter {key!r}"):
        row = await conn.fetchrow(
            "SELECT value, updated_at FROM counter_totals WHERE key = $1", key
        )
    if row is None:
        return None
    value = row["value"]
    return Total(key, int(value) if isinstance(value, Decimal) else value, row["updated_at"])
