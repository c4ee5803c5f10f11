"""What the compaction tests share: a database migrated as the services run it, histories
flushed as an aggregator flushes them, and the sums a compaction must leave as they were."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from distcount_config import RollupTier, project_root
from distcount_store import (
    Connection,
    PartitionFlush,
    Written,
    find_migrations,
    flush_partition,
    migrate,
)
from tests.conftest import Login

ROOT = project_root()

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# a fixed "now" for the simulated histories: a Monday 12:34, no whole hour or day
NOW = datetime(2026, 11, 30, 12, 34, 56, tzinfo=UTC)
TIERS = (RollupTier(HOUR_MS, DAY_MS), RollupTier(DAY_MS, 2 * DAY_MS))

Deltas = dict[int, dict[str, int]]  # bucket start (ms) -> key -> delta


@dataclass(frozen=True)
class Urls:
    admin: str  # owns the schema: VACUUM, sizes, the test's own inserts
    service: str  # as the services (and `distcount compact`) log in


def ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


@dataclass
class Flusher:
    """One partition's flushes, as an aggregator makes them: each moves the stored offset on."""

    conn: Connection
    partition: int = 0
    offset: int | None = None
    written: Deltas = field(default_factory=lambda: defaultdict(dict))

    async def flush(self, deltas: Mapping[int, Mapping[str, int]]) -> None:
        next_offset = (self.offset or 0) + 1
        flush = PartitionFlush(
            "compact-test", "compact-test", self.partition, self.offset, next_offset, deltas
        )
        result = await flush_partition(self.conn, flush)
        assert isinstance(result, Written), result
        self.offset = next_offset
        for start, bucket in deltas.items():
            for key, delta in bucket.items():
                self.written[start][key] = self.written[start].get(key, 0) + delta


def random_history(
    rng: random.Random, keys: Sequence[str], start: datetime, end: datetime, bucket_ms: int
) -> Deltas:
    """Deltas for some keys in each bucket of [start, end): positive and negative, now and then
    one past 64 bits, and buckets where a key's deltas cancel out once rolled up."""
    history: Deltas = {}
    first = ms(start) - ms(start) % bucket_ms
    for start_ms in range(first, ms(end), bucket_ms):
        chosen = rng.sample(keys, rng.randint(0, len(keys)))
        history[start_ms] = {key: rng.choice((-3, -1, 1, 2, 5, 40)) for key in chosen}
    history.setdefault(first, {})["wide"] = 2**63 + 12345  # a bucket sum past bigint
    # +7 then -7 in the same hour: the hour's sum is 0, and leaves no row once rolled up
    history.setdefault(first + bucket_ms, {})["cancels"] = 7
    history.setdefault(first + 2 * bucket_ms, {})["cancels"] = -7
    return history


async def flush_in_parts(flusher: Flusher, history: Deltas, buckets_per_flush: int) -> None:
    starts = sorted(history)
    for i in range(0, len(starts), buckets_per_flush):
        await flusher.flush({s: history[s] for s in starts[i : i + buckets_per_flush]})


async def step_sums(
    conn: Connection, step_ms: int, since: datetime | None = None
) -> dict[tuple[str, int], int]:
    """(key, step start ms) -> the sum of its deltas in that step, from `since` on; zero sums
    are left out (rolled up, they leave no row)."""
    rows = await conn.fetch(
        """
        SELECT key, floor(extract(epoch FROM bucket_start) * 1000 / $1)::bigint AS step,
               sum(delta) AS total
        FROM counter_events
        WHERE $2::timestamptz IS NULL OR bucket_start >= $2
        GROUP BY 1, 2 HAVING sum(delta) <> 0
        """,
        step_ms,
        since,
    )
    return {(r["key"], r["step"] * step_ms): int(r["total"]) for r in rows}


def expected_sums(
    history: Mapping[int, Mapping[str, int]], step_ms: int, since: datetime | None = None
) -> dict[tuple[str, int], int]:
    sums: dict[tuple[str, int], int] = defaultdict(int)
    for start_ms, bucket in history.items():
        if since is None or start_ms >= ms(since):
            for key, delta in bucket.items():
                sums[(key, start_ms - start_ms % step_ms)] += delta
    return {k: v for k, v in sums.items() if v != 0}


async def totals(conn: Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT key, value FROM counter_totals")
    return {r["key"]: int(r["value"]) for r in rows}


EventRow = tuple[int, str, datetime, int, int]  # id, key, bucket_start, delta, width_ms


async def event_rows(conn: Connection) -> list[EventRow]:
    rows = await conn.fetch(
        "SELECT id, key, bucket_start, delta, width_ms FROM counter_events ORDER BY id"
    )
    return [(r["id"], r["key"], r["bucket_start"], r["delta"], r["width_ms"]) for r in rows]


async def width_layout(conn: Connection) -> list[tuple[int, datetime, datetime, int]]:
    """(width_ms, oldest bucket, newest bucket, rows) per width present."""
    rows = await conn.fetch(
        "SELECT width_ms, min(bucket_start) AS oldest, max(bucket_start) AS newest, "
        "count(*) AS n FROM counter_events GROUP BY 1 ORDER BY 1"
    )
    return [(r["width_ms"], r["oldest"], r["newest"], r["n"]) for r in rows]


async def duplicates(conn: Connection) -> int:
    """Merged rows that share a key, a bucket and a width: a complete run leaves none."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM counter_events WHERE width_ms > 0 "
        "GROUP BY key, bucket_start, width_ms HAVING count(*) > 1) AS d"
    )
    return count


async def migrated(admin_url: str, login: Login | None) -> Urls:
    """`admin_url`'s database migrated, the services' role (if any) granted its privileges."""
    assert ROOT is not None
    await migrate(
        admin_url, find_migrations(ROOT / "migrations"), grant_to=login.user if login else None
    )
    return Urls(admin_url, login.url(admin_url) if login is not None else admin_url)
