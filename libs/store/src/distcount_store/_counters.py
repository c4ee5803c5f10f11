"""The aggregators' flush, one partition per transaction, and the reads of the totals.

The flush is what makes the pipeline exactly once: the partition's stored offset is locked and
checked against the one this process started from, the event rows and the totals are written, and
the offset advances, all in one transaction. A different stored offset means another process owns
the partition now (or did in between): nothing is written and the caller must re-read and re-seek.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from distcount_codec import INT64_MAX, INT64_MIN
from distcount_store._errors import mapped

# a connection of its own, or one borrowed from a pool
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

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
_INSERT_EVENTS_WIDE = """
INSERT INTO counter_events (key, bucket_start, delta)
SELECT key, to_timestamp(bucket_ms / 1000.0), delta
FROM unnest($1::text[], $2::bigint[], $3::numeric[]) AS e(key, bucket_ms, delta)
"""
# keys arrive sorted: two transactions touching the same keys lock them in the same order
_UPSERT_TOTALS_WIDE = """
INSERT INTO counter_totals AS t (key, value)
SELECT key, delta FROM unnest($1::text[], $2::numeric[]) AS d(key, delta)
ON CONFLICT (key) DO UPDATE SET value = t.value + excluded.value, updated_at = now()
"""
# the same with bigint arrays, for the usual deltas that fit in 64 bits
_INSERT_EVENTS = _INSERT_EVENTS_WIDE.replace("$3::numeric[]", "$3::bigint[]")
_UPSERT_TOTALS = _UPSERT_TOTALS_WIDE.replace("$2::numeric[]", "$2::bigint[]")
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


@dataclass(frozen=True)
class Fenced:
    """The stored offset is not the expected one: another process flushed this partition."""

    stored_offset: int | None


async def flush_partition(conn: Conn, flush: PartitionFlush) -> Fenced | int:
    """Write one partition's deltas and advance its offset in one transaction; on success, the
    number of event rows written (deltas that summed to zero write none)."""
    ident = (flush.group_id, flush.topic, flush.partition)
    with mapped(f"flushing partition {flush.partition}"):
        return await _flush(conn, flush, ident)


async def _flush(conn: Conn, flush: PartitionFlush, ident: tuple[str, str, int]) -> Fenced | int:
    try:
        async with conn.transaction():
            stored = await conn.fetchval(_LOCK_OFFSET, *ident)
            if stored != flush.expected_offset:
                return Fenced(stored)
            rows = await _write_deltas(conn, flush.deltas) if flush.deltas else 0
            if stored is None:
                await conn.execute(_INSERT_OFFSET, *ident, flush.next_offset, flush.as_of)
            else:
                await conn.execute(_UPDATE_OFFSET, *ident, flush.next_offset, flush.as_of)
    except asyncpg.UniqueViolationError:
        # another process inserted the partition's first row between our read and our insert
        return Fenced(await read_offset(conn, flush.group_id, flush.topic, flush.partition))
    return rows


async def _write_deltas(conn: Conn, deltas: Mapping[int, Mapping[str, int]]) -> int:
    keys: list[str] = []
    starts: list[int] = []
    values: list[int] = []
    for bucket_start_ms, bucket in deltas.items():
        keys += bucket.keys()
        values += bucket.values()
        starts += [bucket_start_ms] * len(bucket)
    if 0 in values:  # increments that cancelled out within a bucket leave no event
        kept = [i for i, value in enumerate(values) if value != 0]
        keys, starts, values = (
            [keys[i] for i in kept],
            [starts[i] for i in kept],
            [values[i] for i in kept],
        )
    if not keys:
        return 0
    if len(deltas) == 1:
        totals = dict(zip(keys, values, strict=True))  # one bucket: a key appears once
    else:
        totals = {}
        for key, value in zip(keys, values, strict=True):
            totals[key] = totals.get(key, 0) + value
    sorted_keys = sorted(key for key, total in totals.items() if total != 0)
    sums = [totals[key] for key in sorted_keys]
    # bigint arrays encode far faster than numeric ones; numeric only when a sum needs it
    wide = _needs_numeric(values) or _needs_numeric(sums)
    await conn.execute(_INSERT_EVENTS_WIDE if wide else _INSERT_EVENTS, keys, starts, values)
    if sorted_keys:
        await conn.execute(_UPSERT_TOTALS_WIDE if wide else _UPSERT_TOTALS, sorted_keys, sums)
    return len(keys)


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
