"""Partitions whose counting stopped at a batch that cannot be decoded, and explicit skips.

An aggregator records a stall when it pauses a partition; the flush that moves the partition's
offset past the stalled offset deletes the row (see `_counters.py`). `skip_stalled` is the
operator's way past a batch that will never decode: it moves the stored offset in one
transaction with a row in `skipped_ranges`, so no record is skipped without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import asyncpg

from distcount_store._errors import StoreError, mapped

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool

# a second stall at the same offset keeps the time counting first stopped there
_RECORD = """
INSERT INTO partition_stalls AS s (group_id, topic, partition, stalled_offset, reason)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (group_id, topic, partition) DO UPDATE
SET stalled_offset = excluded.stalled_offset,
    reason = excluded.reason,
    stalled_at = CASE WHEN s.stalled_offset = excluded.stalled_offset
                      THEN s.stalled_at ELSE excluded.stalled_at END
"""
_READ = """
SELECT group_id, topic, partition, stalled_offset, reason, stalled_at FROM partition_stalls
WHERE ($1::text IS NULL OR group_id = $1) AND ($2::text IS NULL OR topic = $2)
ORDER BY group_id, topic, partition
"""
_LOCK_STALL = """
SELECT stalled_offset FROM partition_stalls
WHERE group_id = $1 AND topic = $2 AND partition = $3
FOR UPDATE
"""
_LOCK_OFFSET = """
SELECT next_offset FROM consumer_offsets
WHERE group_id = $1 AND topic = $2 AND partition = $3
FOR UPDATE
"""


@dataclass(frozen=True)
class Stall:
    group_id: str
    topic: str
    partition: int
    offset: int  # the first record not counted: a batch starting here cannot be decoded
    reason: str
    stalled_at: datetime

    def describe(self) -> str:
        return (
            f"partition {self.partition} of {self.topic} stopped at offset {self.offset} "
            f"since {self.stalled_at:%Y-%m-%d %H:%M:%S %Z}: {self.reason}"
        )


class SkipRefused(StoreError):
    """`skip_stalled` found nothing it may skip; the message says what to do."""


class PartitionRef(NamedTuple):
    """A partition as a consumer group reads it."""

    group_id: str
    topic: str
    partition: int


async def record_stall(conn: Conn, ref: PartitionRef, offset: int, reason: str) -> None:
    with mapped(f"storing the stall of partition {ref.partition}"):
        await conn.execute(_RECORD, *ref, offset, reason)


async def read_stalls(
    conn: Conn, group_id: str | None = None, topic: str | None = None
) -> list[Stall]:
    """The stalled partitions, of one group and topic, or all of them (None)."""
    with mapped("reading the stalled partitions"):
        rows = await conn.fetch(_READ, group_id, topic)
    return [
        Stall(
            row["group_id"],
            row["topic"],
            row["partition"],
            row["stalled_offset"],
            row["reason"],
            row["stalled_at"],
        )
        for row in rows
    ]


async def skip_stalled(
    conn: asyncpg.Connection, ref: PartitionRef, to_offset: int, reason: str
) -> int:
    """Move a stalled partition's stored offset to `to_offset`, past the batch that stalled it;
    returns the offset it moved from. The records in between are never counted: the range is
    recorded in `skipped_ranges`. Refused unless the aggregator has flushed up to the stall."""
    with mapped(f"skipping in partition {ref.partition}"):
        return await _skip(conn, ref, to_offset, reason)


async def _skip(conn: asyncpg.Connection, ref: PartitionRef, to_offset: int, reason: str) -> int:
    group_id, topic, partition = ident = ref
    async with conn.transaction():
        stalled = await conn.fetchval(_LOCK_STALL, *ident)
        if stalled is None:
            raise SkipRefused(
                f"partition {partition} of {topic} (group {group_id}) is not stalled: "
                "nothing to skip"
            )
        stored = await conn.fetchval(_LOCK_OFFSET, *ident)
        if stored != stalled:
            raise SkipRefused(
                f"partition {partition} stalled at offset {stalled}, but the stored offset is "
                f"{stored}: the aggregator has not flushed up to the stall yet (it does within "
                "a flush interval while it runs); try again"
            )
        if to_offset <= stalled:
            raise SkipRefused(
                f"--to must be past the stalled offset {stalled} (the first offset to count "
                f"again), not {to_offset}"
            )
        await conn.execute(
            "UPDATE consumer_offsets SET next_offset = $4, updated_at = now() "
            "WHERE group_id = $1 AND topic = $2 AND partition = $3",
            *ident,
            to_offset,
        )
        await conn.execute(
            "INSERT INTO skipped_ranges"
            " (group_id, topic, partition, from_offset, to_offset, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            *ident,
            stalled,
            to_offset,
            reason,
        )
        await conn.execute(
            "DELETE FROM partition_stalls WHERE group_id = $1 AND topic = $2 AND partition = $3",
            *ident,
        )
    return int(stalled)
