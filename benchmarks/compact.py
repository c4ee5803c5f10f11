"""Compaction of the event log (`distcount compact`): how fast it rolls up a month of flushes,
what it leaves, and that the table stops growing once it runs every day over a steady key set.

1. A private database (no Kafka) is filled as the schema's owner, by COPY, with a month of
   flushes of a steady key set: K keys, a row for each in every bucket of D days (minute
   buckets by default, `width_ms` 0 as the aggregators write them) up to the server's now;
   then ANALYZE. Measured: rows, `pg_total_relation_size('counter_events')` (heap and indexes).
2. `distcount compact` (the CLI, a child process, logging in as the services' role, with
   DISTCOUNT_ROLLUP=1h@1d,1d@30d) runs once, timed from its spawn to its exit: rows merged / s.
   Its progress lines are relayed. Then rows, size as left, and size after VACUUM (what
   autovacuum would do).
3. VACUUM FULL once: the footprint of the compacted log. Then N further days are simulated (40
   by default: past the 30 days after which the first pass's hours are merged into days): a
   day of flushes (one row per key and bucket for the next day, by COPY), then a pass of
   `distcount_store.compaction` (what the CLI runs) in-process as the services' role, with the
   clock moved on by that day (the CLI takes its clock from the server, so only the library can
   be given a later one), then VACUUM; rows and size after each day.

Every pass is checked against the sums read just before it: every key's total, every day's sum,
every hour's sum from the day tier's cutoff on, every bucket's sum from the hour tier's cutoff on
(the steps the API may ask for there), and no row finer than a tier's width left before its
cutoff.

Headline: the table's growth a day over the last simulated week, against its size: <= 0.1 %
a day. The key set is steady, so each day's flushes should fit in the space that day's pass
frees (VACUUM keeps it for reuse); only the day tier's K rows a day are new for good. The first
days grow the table to the space that churn needs, so day 1 against the last is shown beside it,
not held to a limit. PASS needs that and every check. Beside it: the first pass's rows/s,
against the COPY's rows/s in the same run (the stack's bare rate of writing those rows), and
where the growth is (heap, each index).

    .venv/bin/python benchmarks/compact.py [--keys 200] [--days 31] [--further-days 40]
    .venv/bin/python benchmarks/compact.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

import harness as h
from distcount_config import load as load_settings
from distcount_store import CHUNK_ROWS, Merged, Tier, compaction, compaction_lock, tier_ranges

# Steady state: the growth a day over the last simulated week, against the table's size. The
# day tier keeps a row per key and day for good, so it is never quite zero; a log that keeps its
# flushed rows, or an index that keeps a page per key and day, grows by percents a day.
GROWTH = h.Limit(0.1, floor=False, unit=" % a day")
ROLLUP = "1h@1d,1d@30d"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
QUICK = {"keys": 20, "further_days": 10}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLI_DONE = re.compile(r"compacted: ([\d,]+) rows merged into ([\d,]+) in ([\d.]+) s")
_SUMS = """
SELECT key, (extract(epoch FROM bucket_start) * 1000)::bigint / $1 AS step, sum(delta) AS s
FROM counter_events
WHERE bucket_start >= $2
GROUP BY 1, 2
HAVING sum(delta) <> 0
"""
_FINER_LEFT = """
SELECT count(*) FROM counter_events
WHERE bucket_start < $1 AND ($2::timestamptz IS NULL OR bucket_start >= $2) AND width_ms < $3
"""
_FACTS = """
SELECT count(*) AS rows, pg_total_relation_size('counter_events') AS total_bytes,
       pg_relation_size('counter_events') AS heap_bytes,
       pg_indexes_size('counter_events') AS index_bytes
FROM counter_events
"""

_INDEXES = """
SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS bytes
FROM pg_index WHERE indrelid = 'counter_events'::regclass ORDER BY 1
"""

Sums = dict[tuple[str, int], int]  # (key, step index from the epoch) -> sum of deltas


def delta(key: int, bucket: int) -> int:
    """The delta of key `key` in bucket `bucket` (counted from the epoch): 1 to 50."""
    return 1 + (bucket * 7 + key * 13 + (bucket // 60) * 3) % 50


@dataclass(frozen=True)
class Snapshot:
    """The sums a pass must leave as they were, read just before it (and again after)."""

    bucket_ms: int
    hours: Sums  # every hour; days and totals are read off them
    buckets: Sums  # every bucket from `since` on
    since: datetime

    def days(self) -> Sums:
        out: Sums = defaultdict(int)
        for (key, hour), value in self.hours.items():
            out[(key, hour * HOUR_MS // DAY_MS)] += value
        return {k: v for k, v in out.items() if v}

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (key, _), value in self.hours.items():
            out[key] += value
        return dict(out)

    def hours_from(self, moment: datetime) -> Sums:
        return {k: v for k, v in self.hours.items() if k[1] * HOUR_MS >= _ms(moment)}

    def buckets_from(self, moment: datetime) -> Sums:
        return {k: v for k, v in self.buckets.items() if k[1] * self.bucket_ms >= _ms(moment)}


async def snapshot(conn: asyncpg.Connection, bucket_ms: int, since: datetime) -> Snapshot:
    async def sums(step_ms: int, since: datetime) -> Sums:
        rows = await conn.fetch(_SUMS, step_ms, since, timeout=900)
        return {(r["key"], r["step"]): int(r["s"]) for r in rows}

    return Snapshot(bucket_ms, await sums(HOUR_MS, _EPOCH), await sums(bucket_ms, since), since)


def compare(
    before: Snapshot, after: Snapshot, tiers: Sequence[Tier], now: datetime
) -> dict[str, Any]:
    """What a pass changed that it must not. `now` is the latest the pass may have taken for
    its clock: the cutoffs it gives are the latest, and sums from there on were never merged."""
    cutoff = cutoffs(tiers, now)
    day_cut, hour_cut = cutoff[DAY_MS], cutoff[HOUR_MS]
    pairs: dict[str, tuple[dict[Any, int], dict[Any, int]]] = {
        "totals": (before.totals(), after.totals()),
        "days": (before.days(), after.days()),
        "hours_from_day_cutoff": (before.hours_from(day_cut), after.hours_from(day_cut)),
        "buckets_from_hour_cutoff": (before.buckets_from(hour_cut), after.buckets_from(hour_cut)),
    }
    differences = {name: diff for name, (b, a) in pairs.items() if (diff := _diff(b, a))}
    return {
        "compared": {name: len(b) for name, (b, _) in pairs.items()},
        "differences": differences,
        "correct": not differences,
    }


def _diff(before: dict[Any, int], after: dict[Any, int]) -> list[str]:
    """The first few entries that differ."""
    out = []
    for k in sorted(before.keys() | after.keys(), key=str):
        if before.get(k) != after.get(k):
            out.append(f"{k}: {before.get(k)} before, {after.get(k)} after")
            if len(out) == 5:
                break
    return out


def cutoffs(tiers: Sequence[Tier], now: datetime) -> dict[int, datetime]:
    """Tier width -> the cutoff a pass at `now` merges up to."""
    return {r.tier.width_ms: r.cutoff for r in tier_ranges(tiers, now)}


async def finer_left(conn: asyncpg.Connection, tiers: Sequence[Tier], now: datetime) -> int:
    """Rows finer than a tier's width left in its range at `now` (the earliest the pass may
    have taken for its clock): a complete pass leaves none."""
    left = 0
    for r in tier_ranges(tiers, now):
        left += await conn.fetchval(_FINER_LEFT, r.cutoff, r.floor, r.tier.width_ms, timeout=600)
    return left


async def facts(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows, and bytes: in all, of the heap, of the indexes, and of each index by name."""
    row = await conn.fetchrow(_FACTS, timeout=600)
    assert row is not None
    out = {name: int(row[name]) for name in ("rows", "total_bytes", "heap_bytes", "index_bytes")}
    for index in await conn.fetch(_INDEXES):
        out[index["name"]] = int(index["bytes"])
    return out


async def layout(conn: asyncpg.Connection) -> dict[int, int]:
    """width_ms -> rows."""
    rows = await conn.fetch(
        "SELECT width_ms, count(*) AS n FROM counter_events GROUP BY 1 ORDER BY 1", timeout=600
    )
    return {r["width_ms"]: r["n"] for r in rows}


async def server_now(conn: asyncpg.Connection) -> datetime:
    now: datetime = await conn.fetchval("SELECT statement_timestamp()")
    return now


async def fill(
    conn: asyncpg.Connection, keys: int, start: datetime, end: datetime, bucket_ms: int
) -> tuple[int, float]:
    """A row for each of `keys` keys in every bucket of [start, end), by COPY a day at a time:
    (rows, seconds)."""
    first, last = _ms(start) // bucket_ms, _ms(end) // bucket_ms
    per_day = DAY_MS // bucket_ms
    progress = h.Progress("fill", (last - first) * keys, "rows copied")
    width = timedelta(milliseconds=bucket_ms)

    def rows(lo: int, hi: int) -> Iterator[tuple[str, datetime, int, int]]:
        for bucket in range(lo, hi):
            at = _EPOCH + bucket * width
            for k in range(keys):
                yield f"k{k}", at, delta(k, bucket), 0

    started = time.monotonic()
    for lo in range(first, last, per_day):
        hi = min(last, lo + per_day)
        await conn.copy_records_to_table(
            "counter_events",
            records=rows(lo, hi),
            columns=["key", "bucket_start", "delta", "width_ms"],
            timeout=900,
        )
        progress.update((hi - first) * keys)
    return (last - first) * keys, time.monotonic() - started


@dataclass
class Pass:
    """One compaction pass and what it left."""

    name: str
    rows_added: int  # rows inserted since the previous pass: the month, or a day of flushes
    seconds: float  # the CLI: spawn to exit; in-process: the compaction's own time
    rows_in: int  # rows merged (deleted)
    rows_out: int  # rows written
    before: dict[str, int]
    after: dict[str, int]  # after VACUUM
    layout: dict[int, int]  # width_ms -> rows, after
    checks: dict[str, Any]
    finer_left: int
    as_left: dict[str, int] | None = None  # before VACUUM

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def correct(self) -> bool:
        return bool(self.checks["correct"]) and self.finer_left == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": self.rows_per_s, "correct": self.correct}


async def run_cli(
    database: h.Database, bucket_ms: int, chunk_rows: int, timeout_s: float, log_dir: Path
) -> tuple[float, int, int]:
    """`distcount compact` once, as the services' role: (seconds from spawn to exit, rows
    merged, rows written), the rows from its last line."""
    env = h.child_env(
        {
            "DISTCOUNT_DATABASE_URL": database.url,
            "DISTCOUNT_ROLLUP": ROLLUP,
            "DISTCOUNT_BUCKET_MS": str(bucket_ms),
        }
    )
    env.pop("DISTCOUNT_MIGRATE_DATABASE_URL", None)

    def relay(line: h.Line) -> None:
        h.say(f"  distcount compact: {line.text}")

    child = await h.Child.spawn(
        "distcount compact",
        [h.PYTHON, "-m", "distcount_cli", "compact", "--chunk-rows", str(chunk_rows)],
        env,
        log_dir / "compact-cli.log",
        on_line=relay,
    )
    try:
        status = await asyncio.wait_for(child.process.wait(), timeout_s)
        seconds = time.monotonic() - child.spawned_at
    finally:
        await child.stop()
    if status != 0:
        raise child.exited()
    done = child.first_line(lambda t: _CLI_DONE.search(t) is not None)
    match = _CLI_DONE.search(done.text) if done is not None else None
    if match is None:
        raise RuntimeError(f"distcount compact printed no summary; see {child.log_path}")
    return seconds, int(match[1].replace(",", "")), int(match[2].replace(",", ""))


async def run_in_process(
    url: str, tiers: Sequence[Tier], now: datetime, chunk_rows: int
) -> tuple[float, int, int]:
    """`compaction` as the CLI runs it, with the clock at `now`: (seconds, merged, written)."""
    conn = await asyncpg.connect(url, timeout=10)
    rows_in = rows_out = 0
    try:
        started = time.monotonic()
        async with compaction_lock(conn):
            async for event in compaction(conn, tiers, now=now, chunk_rows=chunk_rows):
                if isinstance(event, Merged):
                    rows_in += event.rows_in
                    rows_out += event.rows_out
        return time.monotonic() - started, rows_in, rows_out
    finally:
        await conn.close()


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f}"


@dataclass
class Run:
    """Everything one run measured."""

    passes: list[Pass]
    fill: dict[str, Any]
    footprint: dict[str, int] | None = None  # after VACUUM FULL, before the simulated days


async def bench_passes(
    args: argparse.Namespace, database: h.Database, tiers: Sequence[Tier], log_dir: Path, run: Run
) -> None:
    bucket_ms = args.bucket_ms
    width = timedelta(milliseconds=bucket_ms)
    conn = await asyncpg.connect(database.owner_url, timeout=10)
    try:
        now = await server_now(conn)
        end = _EPOCH + (_ms(now) // bucket_ms) * width
        start = end - timedelta(days=args.days)
        h.say(
            f"filling counter_events: {args.keys:,} keys x {args.days} days of "
            f"{bucket_ms:,} ms buckets up to {end:%Y-%m-%d %H:%M}Z"
        )
        rows, copy_s = await fill(conn, args.keys, start, end, bucket_ms)
        await conn.execute("ANALYZE counter_events", timeout=600)
        run.fill = {"rows": rows, "copy_s": copy_s, "rows_per_s": rows / copy_s}
        before = await facts(conn)
        h.say(
            f"filled {rows:,} rows in {copy_s:.1f} s ({rows / copy_s:,.0f} rows/s); table "
            f"{_mb(before['total_bytes'])} MB"
        )
        lo = await server_now(conn)
        snap = await snapshot(conn, bucket_ms, cutoffs(tiers, lo)[HOUR_MS])
        await h.background_busy(args.wait_quiet_s)
        h.say(f"running `distcount compact` ({ROLLUP}) on {rows:,} rows")
        seconds, rows_in, rows_out = await run_cli(
            database, bucket_ms, args.chunk_rows, args.timeout_s, log_dir
        )
        hi = await server_now(conn)
        as_left = await facts(conn)
        await conn.execute("VACUUM counter_events", timeout=900)
        first = Pass(
            "distcount compact (the month)",
            rows,
            seconds,
            rows_in,
            rows_out,
            before,
            await facts(conn),
            await layout(conn),
            compare(snap, await snapshot(conn, bucket_ms, snap.since), tiers, hi),
            await finer_left(conn, tiers, lo),
            as_left,
        )
        run.passes.append(first)
        _say_pass(first)
        await conn.execute("VACUUM FULL counter_events", timeout=900)
        run.footprint = await facts(conn)
        h.say(f"after VACUUM FULL: {_mb(run.footprint['total_bytes'])} MB, the compacted footprint")
        for day in range(1, args.further_days + 1):
            clock = lo + timedelta(days=day)
            since, until = end + timedelta(days=day - 1), end + timedelta(days=day)
            added, _ = await fill(conn, args.keys, since, until, bucket_ms)
            before = await facts(conn)
            snap = await snapshot(conn, bucket_ms, cutoffs(tiers, clock)[HOUR_MS])
            seconds, rows_in, rows_out = await run_in_process(
                database.url, tiers, clock, args.chunk_rows
            )
            await conn.execute("VACUUM counter_events", timeout=900)
            this = Pass(
                f"day {day}",
                added,
                seconds,
                rows_in,
                rows_out,
                before,
                await facts(conn),
                await layout(conn),
                compare(snap, await snapshot(conn, bucket_ms, snap.since), tiers, clock),
                await finer_left(conn, tiers, clock),
            )
            run.passes.append(this)
            _say_pass(this)
    finally:
        await conn.close()


def _say_pass(p: Pass) -> None:
    h.say(
        f"{p.name}: {p.rows_in:,} rows merged into {p.rows_out:,} in {p.seconds:.1f} s "
        f"({p.rows_per_s:,.0f} rows/s); {p.before['rows']:,} -> {p.after['rows']:,} rows, "
        f"{_mb(p.before['total_bytes'])} -> {_mb(p.after['total_bytes'])} MB; sums "
        + ("identical" if p.correct else f"WRONG: {p.checks['differences']}, {p.finer_left} left")
    )


def _indexes(f: dict[str, int]) -> dict[str, int]:
    """Each index's bytes, by its name without the table's prefix."""
    return {
        k.removeprefix("counter_events_"): v
        for k, v in f.items()
        if k.startswith("counter_events_")
    }


def _layout_text(p: Pass) -> str:
    return ", ".join(f"width {w // 60_000 if w else 0} min: {n:,}" for w, n in p.layout.items())


def report(session: h.Session, meta: dict[str, Any], run: Run, error: str | None) -> int:
    passes = run.passes
    if not passes:
        return session.failed(meta, [], [], error or "no pass")
    first, days = passes[0], passes[1:]
    size = [p.after["total_bytes"] for p in days]
    overall = (size[-1] / size[0] - 1) * 100 if len(size) >= 2 else None
    week = days[-8:]
    per_day = None
    growth = None
    if len(week) >= 2:
        per_day = {
            name: (week[-1].after[name] - week[0].after[name]) / (len(week) - 1)
            for name in ("total_bytes", "heap_bytes", "index_bytes")
        }
        growth = per_day["total_bytes"] / week[0].after["total_bytes"] * 100
    correct = all(p.correct for p in passes)
    passed = growth is not None and GROWTH.passes(growth) and correct
    copy_rate = run.fill["rows_per_s"]
    summary: dict[str, Any] = {
        "first_pass_rows_per_s": first.rows_per_s,
        "copy_rows_per_s": copy_rate,
        "compact_over_copy": first.rows_per_s / copy_rate,
        "size_before_bytes": first.before["total_bytes"],
        "size_after_first_pass_bytes": first.after["total_bytes"],
        "footprint_bytes": run.footprint["total_bytes"] if run.footprint else None,
        "size_per_day_bytes": size,
        "growth_day_1_to_last_pct": overall,
        "growth_pct_a_day_last_week": growth,
        "limit_pct_a_day": GROWTH.value,
        "growth_per_day_last_week_bytes": per_day,
        "all_sums_identical": correct,
        "verdict": h.verdict(passed, error),
        "error": error,
    }
    index_names = list(_indexes(first.after))
    rows = [
        [
            p.name,
            p.rows_added,
            f"{p.rows_in:,} → {p.rows_out:,}",
            f"{p.seconds:.1f}",
            f"{p.rows_per_s:,.0f}",
            p.after["rows"],
            _mb(p.after["total_bytes"]),
            _mb(p.after["heap_bytes"]),
            *(_mb(_indexes(p.after).get(name, 0)) for name in index_names),
            "identical" if p.checks["correct"] else "DIFFERENT",
            p.finer_left,
        ]
        for p in passes
    ]
    pg, w, footprint = meta["postgres"], meta["workload"], run.footprint
    month_rows = 1000 * w["days"] * DAY_MS // w["bucket_ms"]
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**; PostgreSQL {pg['server_version']} "
        f"(synchronous_commit {pg['synchronous_commit']}, shared_buffers {pg['shared_buffers']}, "
        f"max_wal_size {pg['max_wal_size']}). The CLI and PostgreSQL share these cores.",
        "",
        f"Workload: a steady key set of {w['keys']:,} keys, a row for each in every "
        f"{w['bucket_ms'] // 1000:,} s bucket of {w['days']} days ({run.fill['rows']:,} rows, "
        f"width_ms 0), by COPY as the owner in {run.fill['copy_s']:.1f} s "
        f"({copy_rate:,.0f} rows/s); then `distcount compact` with DISTCOUNT_ROLLUP={ROLLUP} "
        f"(chunks of {w['chunk_rows']:,} rows) as the services' role, timed spawn to exit; then "
        f"VACUUM FULL once, and {w['further_days']} simulated days, each a day of flushes "
        "(COPY) then a pass of `distcount_store.compaction` with the clock a day later, then "
        f"VACUUM. 1,000 keys would make {month_rows:,} rows a month: this run is "
        f"{w['keys'] / 1000:.0%} of that (`--keys`).",
        "",
        h.table(
            [
                *("pass", "rows added", "rows merged → written", "seconds", "rows/s"),
                *("rows after", "MB after (VACUUM)", "heap MB"),
                *(f"{name} MB" for name in index_names),
                *("sums", "finer rows left"),
            ],
            rows,
        ),
        "",
        f"The month: {_mb(first.before['total_bytes'])} MB before ("
        f"{_mb(first.before['heap_bytes'])} heap, {_mb(first.before['index_bytes'])} indexes); "
        + (f"{_mb(first.as_left['total_bytes'])} MB as the pass left it; " if first.as_left else "")
        + f"{_mb(first.after['total_bytes'])} MB after VACUUM (freed space is kept for reuse); "
        + (
            f"{_mb(footprint['total_bytes'])} MB after VACUUM FULL (the compacted footprint: "
            f"{_mb(footprint['heap_bytes'])} heap, {_mb(footprint['index_bytes'])} indexes). "
            if footprint
            else ""
        )
        + f"Rows per width after it: {_layout_text(first)}. Compaction merged "
        f"**{first.rows_per_s:,.0f} rows/s** (spawn to exit), "
        f"{first.rows_per_s / copy_rate:.2f}x the COPY's rate in the same run.",
        "",
    ]
    if per_day is not None:
        md += [
            f"Over the last {len(week) - 1} simulated days the table grew "
            f"{per_day['total_bytes'] / 2**20:,.2f} MB a day: heap "
            f"{per_day['heap_bytes'] / 2**20:,.2f} MB, indexes "
            f"{per_day['index_bytes'] / 2**20:,.2f} MB (a day of flushes is "
            f"{days[-1].rows_added:,} rows; the day tier adds {w['keys']:,} rows a day). Rows "
            f"per width after the last day: {_layout_text(days[-1])}.",
            "",
        ]
    md += [
        (
            f"**Headline: over the last {len(week) - 1} simulated days the table grew "
            f"{growth:.3f} % a day ({GROWTH}); from day 1 to day {len(days)}, {overall:+.1f} % "
            "(the first days fill the space the churn of a day's fine rows reuses); sums "
            f"{'identical' if correct else 'NOT identical'} across every pass: "
            f"{summary['verdict']}**"
            if growth is not None and overall is not None
            else f"**No growth figure (fewer than 2 simulated days): {summary['verdict']}**"
        ),
        *h.error_lines(error),
        "",
        "Sums checked per pass, against those read just before it: every key's total, every "
        "day's sum, every hour's from the day tier's cutoff on, every bucket's from the hour "
        "tier's cutoff on. Finer rows left = rows narrower than a tier's width still before its "
        "cutoff (a complete pass leaves none).",
    ]
    data = {
        **meta,
        "fill": run.fill,
        "footprint": run.footprint,
        "passes": [p.as_dict() for p in passes],
        "summary": summary,
    }
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("compact", "Compaction benchmark")
    endpoints = h.Endpoints.load()
    h.say(
        f"compaction benchmark: {args.keys:,} keys x {args.days} days of {args.bucket_ms:,} ms "
        f"buckets, then {args.further_days} simulated days; {endpoints.describe()}"
    )
    run = Run([], {})
    error: str | None = None
    pg: dict[str, str] = {}
    async with h.fresh_database(endpoints, "bench_compact") as database:
        pg = await h.postgres_facts(database.owner_url)
        tiers = load_settings({"DISTCOUNT_ROLLUP": ROLLUP}).rollup
        try:
            await bench_passes(args, database, tiers, session.log_dir, run)
        except Exception as exc:  # report the passes measured, and why the rest were not
            error = h.describe(exc)
            h.say(f"stopped early: {exc}")
    meta = session.meta(
        postgres=pg,
        workload={
            "keys": args.keys,
            "days": args.days,
            "bucket_ms": args.bucket_ms,
            "further_days": args.further_days,
            "chunk_rows": args.chunk_rows,
            "rollup": ROLLUP,
        },
        logs=str(session.log_dir),
    )
    return report(session, meta, run, error)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="distcount compact over a month of flushes.")
    add = parser.add_argument
    add("--keys", type=int, default=200, help="the steady key set's size")
    add("--days", type=int, default=31, help="days of flushes before the first pass")
    add("--bucket-ms", type=int, default=60_000, help="the flushes' bucket width")
    add("--further-days", type=int, default=40, help="simulated days after the first pass")
    add("--chunk-rows", type=int, default=CHUNK_ROWS, help="rows one transaction merges at most")
    add("--timeout-s", type=float, default=1800.0, help="give up on the CLI after this long")
    add(
        "--wait-quiet-s",
        type=float,
        default=60.0,
        help="before the CLI, wait up to this long for other processes to leave the CPU idle",
    )
    quick = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
    add("--quick", action="store_true", help=f"a quick look: {quick}")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    h.at_least(parser, args, 1, "--keys", "--days", "--bucket-ms", "--chunk-rows")
    if HOUR_MS % args.bucket_ms:
        parser.error("--bucket-ms must divide an hour (the rollup's finest width)")
    if args.further_days < 0:
        parser.error("--further-days must be at least 0")
    return args


def main() -> None:
    args = arguments()
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
