"""The reads of the read side: what is flushed (offsets and as_of per partition), history per
step, listing in key order, and the busiest counters of a recent window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from distcount_store._errors import mapped

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool

_POSITIONS = """
SELECT partition, next_offset, as_of FROM consumer_offsets WHERE group_id = $1 AND topic = $2
"""
# Every width rows are kept at: 0 (as flushed) and those rollup wrote (see 0004_read_side.sql),
# each read as one range scan of the index that leads with (key and) width. OFFSET 0 keeps the
# planner from flattening the scan into one over every width, filtered afterwards.
_WIDTHS = "unnest(ARRAY(SELECT width_ms FROM counter_widths) || 0) AS w(width_ms)"
# Buckets are aligned to the epoch, and a step is a whole number of them (or of a rollup's
# width over rolled-up ranges): each row falls in exactly one step.
_HISTORY = f"""
SELECT ((extract(epoch FROM e.bucket_start) * 1000)::bigint - $4) / $5 AS step,
       sum(e.delta) AS value
FROM {_WIDTHS}
CROSS JOIN LATERAL (
    SELECT bucket_start, delta FROM counter_events
    WHERE key = $1 AND width_ms = w.width_ms AND bucket_start >= $2 AND bucket_start < $3
    OFFSET 0
) AS e
GROUP BY 1
"""
_LIST = """
SELECT key, value FROM counter_totals
WHERE key COLLATE "C" > $1 AND key COLLATE "C" >= $2 AND ($3::text IS NULL OR key COLLATE "C" < $3)
ORDER BY key COLLATE "C"
LIMIT $4
"""
# `until` leaves out buckets stamped in the future by a producer's clock
_TOP = f"""
SELECT e.key, sum(e.delta) AS value
FROM {_WIDTHS}
CROSS JOIN LATERAL (
    SELECT key, delta FROM counter_events
    WHERE width_ms = w.width_ms AND bucket_start >= $1 AND bucket_start < $2
    OFFSET 0
) AS e
GROUP BY e.key
ORDER BY value DESC, key COLLATE "C"
LIMIT $3
"""


@dataclass(frozen=True)
class HistoryQuery:
    """One key's sums per step of `step_ms` over [start, end); `start_ms` is `start` in epoch ms,
    a multiple of `step_ms`."""

    key: str
    start: datetime
    end: datetime
    start_ms: int
    step_ms: int


@dataclass(frozen=True)
class Flushed:
    """Per partition of a group and topic: the next offset stored, and its as_of (or None)."""

    offsets: dict[int, int]
    as_of: dict[int, datetime | None]

    def covers(self, offsets: dict[int, int]) -> bool:
        """Whether every record at `offsets` (partition -> offset) is flushed."""
        return all(self.offsets.get(p, 0) > offset for p, offset in offsets.items())

    def oldest_as_of(self, partitions: int) -> datetime | None:
        """The as_of of the whole topic of `partitions` partitions: the earliest of theirs, or
        None while one of them has none."""
        if len(self.as_of) < partitions or None in self.as_of.values():
            return None
        return min(t for t in self.as_of.values() if t is not None)


async def read_flushed(conn: Conn, group_id: str, topic: str) -> Flushed:
    with mapped(f"reading what is flushed of {topic}"):
        rows = await conn.fetch(_POSITIONS, group_id, topic)
    return Flushed(
        {row["partition"]: row["next_offset"] for row in rows},
        {row["partition"]: row["as_of"] for row in rows},
    )


async def read_history(conn: Conn, query: HistoryQuery) -> dict[int, int]:
    """Step index (from the query's start) -> the sum of the key's deltas in that step; empty
    steps are absent."""
    with mapped(f"reading the history of {query.key!r}"):
        rows = await conn.fetch(
            _HISTORY, query.key, query.start, query.end, query.start_ms, query.step_ms
        )
    return {row["step"]: _int(row["value"]) for row in rows}


async def list_totals(conn: Conn, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
    """Up to `limit` (key, total) in byte order, the keys starting with `prefix` and after
    `after` ("" for the start)."""
    with mapped("listing counters"):
        rows = await conn.fetch(_LIST, after, prefix, prefix_end(prefix), limit)
    return [(row["key"], _int(row["value"])) for row in rows]


async def top_counters(
    conn: Conn, since: datetime, until: datetime, limit: int
) -> list[tuple[str, int]]:
    """The `limit` keys with the largest sums of deltas in buckets in [since, until)."""
    with mapped("reading the busiest counters"):
        rows = await conn.fetch(_TOP, since, until, limit)
    return [(row["key"], _int(row["value"])) for row in rows]


def prefix_end(prefix: str) -> str | None:
    """The first string in byte order after every string that starts with `prefix` (None: no
    such bound, for "" or a prefix of nothing but U+10FFFF)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            bumped = last + 1
            if 0xD800 <= bumped <= 0xDFFF:  # surrogates are not characters: past them
                bumped = 0xE000
            return "".join(chars) + chr(bumped)
    return None


def _int(value: int | Decimal) -> int:
    return int(value) if isinstance(value, Decimal) else value
