"""Rollup of the event log (`distcount compact`): rows older than a tier's age are merged into
buckets of its width, so that the log stops growing at the flush's rate while every total, and
every history sum at a step that is a multiple of the width, stays the same.

Tiers are walked coarsest first: rows older than the coarsest tier's cutoff go straight to its
width, and a finer tier is left only the range between the next coarser cutoff and its own. Each
tier walks its range in chunks, oldest first, each chunk ONE statement (`_MERGE`): it deletes the
rows finer than the width in the chunk, deletes the rows of that width already there for the
same keys (a bucket merged in parts, or a late row that landed in a merged bucket), and inserts
one row per key and bucket with their sum. A chunk commits whole or not at all, so a compactor
killed at any point leaves every sum as it was, and the next run finds what is left by itself.

A flush that commits into the range while a chunk runs is not in the chunk's snapshot: its rows
stay as they are, counted, until the next pass merges them. Flushes only insert, and the merge
only deletes rows that already existed, so the two never wait for each other. Compactors take
turns on a session-level advisory lock; without it two would still not lose or double anything
(a row deleted by one is not returned by the other's DELETE), only waste work.

Each width's rows are apart in the indexes, which lead with the width (0004_read_side.sql):
a chunk empties whole index pages of the finer widths, which vacuum gives back, and appends its
sums to its own width's part, in time order. `counter_widths` lists the widths written, for the
reads and for the walk, which visits each finer width in time order and takes the earliest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import asyncpg

from distcount_core import describe
from distcount_store._errors import QueryFailed, mapped

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Any constant will do, as long as nothing else in the database uses it for another purpose.
COMPACT_LOCK_KEY: Final = 0x64697374636D70  # "distcmp"
# Rows a chunk moves at most (but all the rows of one bucket start, however many): enough that
# a statement's overhead is small, few enough that one transaction stays short (see the README).
CHUNK_ROWS: Final = 20_000
# how often a compactor waiting for another one asks for the lock again (and looks for a stop)
_LOCK_POLL_S: Final = 0.5
_TRY_LOCK: Final = "SELECT pg_try_advisory_lock($1)"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_MIGRATED = "SELECT to_regclass('counter_widths') IS NOT NULL"
_WIDTHS = "SELECT coalesce(array_agg(width_ms), '{}') FROM counter_widths"
_ADD_WIDTH = "INSERT INTO counter_widths (width_ms) VALUES ($1) ON CONFLICT DO NOTHING"
# The merge's semi-join by key is hashed: with the width's rows rare in the statistics, the
# planner would otherwise loop over the chunk's keys once per merged row. Each chunk's
# statements are planned for their own bounds (chunks differ widely in size).
_MERGE_SETTINGS = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_nestloop = off"
# Rows finer than the tier's width are those of the widths $2 (0 and the finer ones rollup
# wrote); each is walked in time order through the index that leads with the width.
# the oldest bucket start of those rows in [$3, $1) (from the beginning when $3 is NULL)
_FIRST = """
SELECT min(f.bucket_start) FROM unnest($2::integer[]) AS w(width_ms),
LATERAL (
    SELECT bucket_start FROM counter_events AS e
    WHERE e.width_ms = w.width_ms AND e.bucket_start < $1
      AND ($3::timestamptz IS NULL OR e.bucket_start >= $3)
    ORDER BY e.bucket_start LIMIT 1
) AS f
"""
# the earliest bucket start, over those widths, of the row $4 rows on from $1 in its width: a
# chunk ending there holds at most $4 rows of each width
_NTH = """
SELECT min(n.bucket_start) FROM unnest($3::integer[]) AS w(width_ms),
LATERAL (
    SELECT bucket_start FROM counter_events AS e
    WHERE e.width_ms = w.width_ms AND e.bucket_start >= $1 AND e.bucket_start < $2
    ORDER BY e.bucket_start OFFSET $4 LIMIT 1
) AS n
"""
_NEXT_START = """
SELECT min(n.bucket_start) FROM unnest($3::integer[]) AS w(width_ms),
LATERAL (
    SELECT bucket_start FROM counter_events AS e
    WHERE e.width_ms = w.width_ms AND e.bucket_start > $1 AND e.bucket_start < $2
    ORDER BY e.bucket_start LIMIT 1
) AS n
"""
# $1 is aligned to the width $3 and every row moved starts at or after it, so the integer
# division floors: each row lands in the bucket of width $3 that holds it. The rows of width $3
# already there for the same key and bucket (merged in an earlier part, or before a late row
# came) go into the sum too, so a complete pass leaves one row per key and bucket. Sums that come
# out zero leave no row, as a flush writes none.
_MERGE = """
WITH fine AS (
    DELETE FROM counter_events
    WHERE width_ms = ANY ($4::integer[]) AND bucket_start >= $1 AND bucket_start < $2
    RETURNING key, bucket_start, delta
), binned AS (
    SELECT key,
           $1 + (extract(epoch FROM bucket_start - $1) * 1000)::bigint / $3 * $3
                * interval '1 millisecond' AS bucket_start,
           delta
    FROM fine
), merged AS (
    DELETE FROM counter_events
    WHERE width_ms = $3 AND bucket_start >= $1 AND bucket_start < $2
      AND (key, bucket_start) IN (SELECT key, bucket_start FROM binned)
    RETURNING key, bucket_start, delta
), sums AS (
    SELECT key, bucket_start, sum(delta) AS delta
    FROM (SELECT * FROM binned UNION ALL SELECT * FROM merged) AS moved
    GROUP BY 1, 2
    HAVING sum(delta) <> 0
), written AS (
    INSERT INTO counter_events (key, bucket_start, delta, width_ms)
    SELECT key, bucket_start, delta, $3 FROM sums ORDER BY bucket_start, key
    RETURNING 1
)
SELECT (SELECT count(*) FROM fine) + (SELECT count(*) FROM merged) AS rows_in,
       (SELECT count(*) FROM written) AS rows_out
"""


class Tier(Protocol):
    """A rollup tier, as `distcount_config.RollupTier` holds one: rows whose bucket starts more
    than `age_ms` ago are merged into buckets of `width_ms`."""

    @property
    def width_ms(self) -> int: ...

    @property
    def age_ms(self) -> int: ...


@dataclass(frozen=True)
class TierRange:
    """What one tier merges in a run: rows finer than its width whose bucket starts in
    [floor, cutoff); floor None for the coarsest tier (the whole past)."""

    tier: Tier
    cutoff: datetime  # `now` minus the age, rounded down to a whole bucket of the width
    floor: datetime | None  # the next coarser tier's cutoff: older rows are that tier's

    @property
    def width(self) -> timedelta:
        return timedelta(milliseconds=self.tier.width_ms)


@dataclass(frozen=True)
class Merged:
    """One committed chunk: the rows in [start, end) finer than the tier's width are merged."""

    range: TierRange
    first: datetime  # where this tier's walk began (the bucket of the oldest row it found)
    start: datetime
    end: datetime
    rows_in: int  # rows deleted: those finer than the width, and that width's merged again
    rows_out: int  # rows written

    def buckets_left(self) -> int:
        """Whole buckets of the width between this chunk's end and the cutoff."""
        return -(-(self.range.cutoff - self.end) // self.range.width)

    def done(self) -> float:
        """The share of the tier's range walked so far, by time."""
        total = self.range.cutoff - self.first
        return 1.0 if total <= timedelta(0) else (self.end - self.first) / total


@dataclass(frozen=True)
class TierDone:
    """A tier's walk ended: nothing finer than its width is left before its cutoff."""

    range: TierRange


def tier_ranges(tiers: Sequence[Tier], now: datetime) -> list[TierRange]:
    """Each tier's range at `now`, coarsest first (the order a run walks them in)."""
    ranges: list[TierRange] = []
    floor: datetime | None = None
    for tier in sorted(tiers, key=lambda t: t.width_ms, reverse=True):
        cutoff = floor_to(now - timedelta(milliseconds=tier.age_ms), tier.width_ms)
        # a tier older but finer than the next (refused by the settings) would walk backwards
        cutoff = max(cutoff, floor) if floor is not None else cutoff
        ranges.append(TierRange(tier, cutoff, floor))
        floor = cutoff
    return ranges


def floor_to(moment: datetime, width_ms: int) -> datetime:
    """The start of the bucket of `width_ms` holding `moment` (buckets aligned to the epoch)."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=micros - micros % (width_ms * 1000))


@contextlib.asynccontextmanager
async def compaction_lock(
    conn: Conn,
    on_wait: Callable[[int | None], None] | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[bool]:
    """Hold the compactors' advisory lock on `conn` for the block, which gets True; when
    another compactor holds it, call `on_wait` with that one's server pid (None if unknown),
    then wait for it, asking again every `_LOCK_POLL_S`. If `stop` is set meanwhile, the block
    runs without the lock and gets False (it must do nothing)."""
    with mapped("taking the compactors' lock"):
        held = bool(await conn.fetchval(_TRY_LOCK, COMPACT_LOCK_KEY))
        if not held and on_wait is not None:
            on_wait(await _holder(conn))
        while not held and not (stop is not None and stop.is_set()):
            if stop is None:
                await asyncio.sleep(_LOCK_POLL_S)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _LOCK_POLL_S)
            held = bool(await conn.fetchval(_TRY_LOCK, COMPACT_LOCK_KEY))
    try:
        yield held
    finally:
        if held and not conn.is_closed():
            with mapped("releasing the compactors' lock"):
                await conn.execute("SELECT pg_advisory_unlock($1)", COMPACT_LOCK_KEY)


async def _holder(conn: Conn) -> int | None:
    # a bigint key shows in pg_locks as its two 32-bit halves; advisory locks are per database
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1 AND objid = $2 AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        COMPACT_LOCK_KEY >> 32,
        COMPACT_LOCK_KEY & 0xFFFFFFFF,
    )
    return pid


async def compaction(
    conn: Conn,
    tiers: Sequence[Tier],
    *,
    now: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> AsyncIterator[Merged | TierDone]:
    """Merge what `tiers` say is old at `now` (the server's clock by default), one committed
    chunk per `Merged`, and a `TierDone` after each tier. Stopping between chunks (breaking out
    of the loop) leaves a consistent log; the next run goes on from there."""
    with mapped("preparing to compact counter_events"):
        if not await conn.fetchval(_MIGRATED):
            raise QueryFailed(
                "the database has no rollup schema (counter_widths): run `distcount migrate` first"
            )
        if now is None:
            now = await conn.fetchval("SELECT statement_timestamp()")
            assert now is not None
    for tier_range in tier_ranges(tiers, now):
        async for merged in _walk(conn, tier_range, chunk_rows):
            yield merged
        yield TierDone(tier_range)


async def _walk(conn: Conn, tr: TierRange, chunk_rows: int) -> AsyncIterator[Merged]:
    width_ms = tr.tier.width_ms
    with mapped(f"reading the widths of counter_events below {width_ms} ms"):
        # the flushed width, and those of finer tiers; the widths only change under the lock
        known: list[int] = await conn.fetchval(_WIDTHS)
    finer = sorted({0, *(w for w in known if w < width_ms)})
    position, first = tr.floor, None
    while True:
        with mapped(f"merging rows of counter_events into {width_ms} ms buckets"):
            async with conn.transaction():
                chunk = await _chunk(conn, tr, finer, position, chunk_rows)
        if chunk is None:
            return
        first = first or chunk[0]
        yield Merged(tr, first, *chunk)
        position = chunk[1]


async def _chunk(
    conn: Conn, tr: TierRange, finer: list[int], position: datetime | None, chunk_rows: int
) -> tuple[datetime, datetime, int, int] | None:
    """Merge the next chunk at or after `position`: (start, end, rows in, rows out), or None
    when nothing is left to merge."""
    width_ms, cutoff = tr.tier.width_ms, tr.cutoff
    oldest = await conn.fetchval(_FIRST, cutoff, finer, position)
    if oldest is None:
        return None
    start = floor_to(oldest, width_ms)
    end = await _chunk_end(conn, oldest, tr, finer, chunk_rows)
    await conn.execute(_ADD_WIDTH, width_ms)  # before its first row: reads must walk it
    await conn.execute(_MERGE_SETTINGS)
    rows_in, rows_out = await _merge(conn, start, end, width_ms, finer)
    return start, end, rows_in, rows_out


async def _chunk_end(
    conn: Conn, oldest: datetime, tr: TierRange, finer: list[int], chunk_rows: int
) -> datetime:
    """Where a chunk holding `oldest` ends: before the row `chunk_rows` rows on, on a bucket
    boundary of the width when that leaves whole buckets, and always after `oldest` (so that a
    walk moves on even when all the rows of one bucket start are more than `chunk_rows`)."""
    width_ms, cutoff = tr.tier.width_ms, tr.cutoff
    end: datetime | None = await conn.fetchval(_NTH, oldest, cutoff, finer, chunk_rows)
    if end is None:
        return cutoff
    if end == oldest:  # more rows start there than a chunk holds: they go together
        end = await conn.fetchval(_NEXT_START, oldest, cutoff, finer)
        return cutoff if end is None else end
    whole = floor_to(end, width_ms)
    return whole if whole > oldest else end


async def _merge(
    conn: Conn, start: datetime, end: datetime, width_ms: int, finer: list[int]
) -> tuple[int, int]:
    try:
        row = await conn.fetchrow(_MERGE, start, end, width_ms, finer)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise QueryFailed(
            f"{describe(exc)}: the services' role may not delete from counter_events yet; "
            "`distcount migrate` grants it"
        ) from exc
    assert row is not None
    return int(row["rows_in"]), int(row["rows_out"])
