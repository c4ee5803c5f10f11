"""`distcount compact` against a real PostgreSQL, as the services' role: every total and every sum
at a tier's step stays what it was, old rows end up one per key and bucket, a rerun changes
nothing, late rows are merged by the next pass, and two compactors take turns."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from distcount_store import (
    Connection,
    Merged,
    TierDone,
    compaction,
    compaction_lock,
    connect,
    tier_ranges,
)
from tests.conftest import Login
from tests.integration.compact_history import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    NOW,
    TIERS,
    Flusher,
    Urls,
    duplicates,
    event_rows,
    expected_sums,
    flush_in_parts,
    migrated,
    ms,
    random_history,
    step_sums,
    totals,
    width_layout,
)

pytestmark = pytest.mark.integration

KEYS = [f"k{i}" for i in range(12)]
# small chunks: hour and day buckets are merged in several parts, as big ones are in production
CHUNK_ROWS = 37
HOUR_CUTOFF, DAY_CUTOFF = (r.cutoff for r in reversed(tier_ranges(TIERS, NOW)))


@pytest.fixture
async def urls(fresh_database: str, service_login: Login | None) -> Urls:
    return await migrated(fresh_database, service_login)


@pytest.fixture
async def service(urls: Urls) -> AsyncIterator[Connection]:
    conn = await connect(urls.service)
    try:
        yield conn
    finally:
        await conn.close()


async def _compact(conn: Connection, chunk_rows: int = CHUNK_ROWS) -> list[Merged | TierDone]:
    async with compaction_lock(conn):
        return [event async for event in compaction(conn, TIERS, now=NOW, chunk_rows=chunk_rows)]


async def _assert_sums(conn: Connection, history: dict[int, dict[str, int]]) -> None:
    # days everywhere, hours where no day tier reaches, the flushed buckets where no tier does
    assert await step_sums(conn, DAY_MS) == expected_sums(history, DAY_MS)
    assert await step_sums(conn, HOUR_MS, DAY_CUTOFF) == expected_sums(history, HOUR_MS, DAY_CUTOFF)
    assert await step_sums(conn, MINUTE_MS, HOUR_CUTOFF) == expected_sums(
        history, MINUTE_MS, HOUR_CUTOFF
    )
    totals_expected: dict[str, int] = {}
    for bucket in history.values():
        for key, delta in bucket.items():
            totals_expected[key] = totals_expected.get(key, 0) + delta
    # a key whose deltas cancel out within one flush gets no total, as none was counted
    counted = {key: total for key, total in (await totals(conn)).items() if total != 0}
    assert counted == {key: total for key, total in totals_expected.items() if total != 0}


async def test_every_sum_at_the_coarser_steps_stays_and_a_rerun_changes_nothing(
    service: Connection,
) -> None:
    flusher = Flusher(service)
    history = random_history(random.Random(7), KEYS, NOW - timedelta(days=3), NOW, MINUTE_MS)
    await flush_in_parts(flusher, history, buckets_per_flush=45)
    flushed_rows = await event_rows(service)
    await _assert_sums(service, history)

    events = await _compact(service)

    await _assert_sums(service, history)
    # coarsest tier first, each tier's walk ending with a TierDone
    done = [e.range.tier for e in events if isinstance(e, TierDone)]
    assert done == [TIERS[1], TIERS[0]]
    merged = [e for e in events if isinstance(e, Merged)]
    assert len(merged) > 20, "the chunks are small: many of them"
    assert all(e.start < e.end <= e.range.cutoff for e in merged)
    # flushed rows older than a cutoff are gone; the rest are untouched, row for row
    layout: dict[int, tuple[datetime, datetime]] = {
        width: (oldest, newest) for width, oldest, newest, _ in await width_layout(service)
    }
    assert set(layout) == {0, HOUR_MS, DAY_MS}
    assert layout[0][0] >= HOUR_CUTOFF
    assert layout[HOUR_MS][0] >= DAY_CUTOFF
    assert layout[HOUR_MS][1] < HOUR_CUTOFF
    assert layout[DAY_MS][1] < DAY_CUTOFF
    kept = [row for row in flushed_rows if row[2] >= HOUR_CUTOFF]
    assert [row for row in await event_rows(service) if row[4] == 0] == kept
    assert await duplicates(service) == 0
    cancelled = await service.fetchval(
        "SELECT count(*) FROM counter_events WHERE key = 'cancels' AND width_ms > 0"
    )
    assert cancelled == 0, "a sum of zero leaves no row, as a flush writes none"

    compacted = await event_rows(service)
    rerun = await _compact(service)
    assert rerun == [TierDone(tier_ranges(TIERS, NOW)[0]), TierDone(tier_ranges(TIERS, NOW)[1])]
    assert await event_rows(service) == compacted


async def test_late_rows_in_merged_buckets_are_merged_by_the_next_pass(
    service: Connection,
) -> None:
    flusher = Flusher(service)
    history = random_history(random.Random(11), KEYS, NOW - timedelta(days=3), NOW, MINUTE_MS)
    await flush_in_parts(flusher, history, buckets_per_flush=200)
    await _compact(service, chunk_rows=500)

    # an aggregator that lagged flushes into buckets already rolled up to days and to hours
    late = {
        ms(DAY_CUTOFF) - 6 * HOUR_MS + 5 * MINUTE_MS: {"k1": 3, "new-key": 9},
        ms(DAY_CUTOFF) + 90 * MINUTE_MS: {"k1": -2, "k2": 4},
        ms(HOUR_CUTOFF) - 7 * MINUTE_MS: {"k3": 1},
    }
    await flusher.flush(late)
    for start, bucket in late.items():
        for key, delta in bucket.items():
            history.setdefault(start, {})[key] = history[start].get(key, 0) + delta
    await _assert_sums(service, history)  # counted before any merge

    events = await _compact(service, chunk_rows=500)

    assert sum(e.rows_in for e in events if isinstance(e, Merged)) < 100, "only the late rows"
    await _assert_sums(service, history)
    assert await duplicates(service) == 0
    fine_before_cutoff = await service.fetchval(
        "SELECT count(*) FROM counter_events WHERE width_ms = 0 AND bucket_start < $1",
        HOUR_CUTOFF,
    )
    assert fine_before_cutoff == 0


async def test_two_compactors_take_turns(urls: Urls, service: Connection) -> None:
    other = await connect(urls.service)
    waited: list[int | None] = []
    try:
        async with compaction_lock(service):
            holder = await service.fetchval("SELECT pg_backend_pid()")
            second = asyncio.create_task(_hold_then_release(other, waited))
            await asyncio.sleep(0.5)
            assert waited == [holder], "the second one says whom it waits for"
            assert not second.done(), "and waits"
        await asyncio.wait_for(second, 10)
    finally:
        await other.close()


async def _hold_then_release(conn: Connection, waited: list[int | None]) -> None:
    async with compaction_lock(conn, waited.append):
        pass
