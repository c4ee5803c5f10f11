"""`distcount compact` under faults, against a real PostgreSQL (and a real aggregator): killed
with SIGKILL in the middle of a chunk and run again, running while an aggregator flushes rows
into the very buckets it merges, and `--schedule` stopped by SIGTERM. Every total, and every sum
at a tier's step, stays what was counted; old rows end up one per key and bucket."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from distcount_codec import Increment, encode_record
from distcount_config import RollupTier
from distcount_store import Connection, Merged, compaction, compaction_lock, connect
from tests.conftest import Login
from tests.integration.compact_history import (
    DAY_MS,
    EPOCH,
    HOUR_MS,
    MINUTE_MS,
    Deltas,
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
)
from tests.integration.conftest import clean_environ
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration

# DISTCOUNT_ROLLUP's default, `1h@1d,1d@30d`: what `distcount compact` runs with in these tests
TIERS = (RollupTier(HOUR_MS, DAY_MS), RollupTier(DAY_MS, 30 * DAY_MS))
WIDTHS = {tier.width_ms for tier in TIERS}


@pytest.fixture
async def urls(fresh_database: str, service_login: Login | None) -> Urls:
    return await migrated(fresh_database, service_login)


@pytest.fixture
async def admin(urls: Urls) -> AsyncIterator[Connection]:
    conn = await connect(urls.admin)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def service(urls: Urls) -> AsyncIterator[Connection]:
    conn = await connect(urls.service)
    try:
        yield conn
    finally:
        await conn.close()


# -- test 1: SIGKILL in the middle of a chunk, then run to the end ----------------------------


async def test_a_compactor_killed_mid_chunk_loses_nothing_and_the_next_run_finishes(
    urls: Urls, admin: Connection, service: Connection
) -> None:
    now = await server_now(admin)
    # a month and more of 2-minute buckets, ~35,000 rows: ~175 chunks of 200 rows
    history = random_history(
        random.Random(20261130), ["a", "b", "c"], now - timedelta(days=33), now, 2 * MINUTE_MS
    )
    flusher = Flusher(service)
    await flush_in_parts(flusher, without_boundary_buckets(history, now), buckets_per_flush=2000)
    counted = await totals(admin)
    assert len(await event_rows(admin)) > 30_000
    await assert_sums_kept(admin, flusher.written, counted)

    locked = await kill_mid_chunk(
        urls, admin, now, lambda: assert_sums_kept(admin, flusher.written, counted)
    )
    # its chunk half done, the killed compactor's session ended: its chunk was never committed
    await assert_sums_kept(admin, flusher.written, counted)
    assert await duplicates(admin) == 0
    assert await admin.fetchval("SELECT count(*) FROM counter_events WHERE id = $1", locked) == 1
    hour_cutoff, day_cutoff = cutoffs(now)
    assert await finer_than(admin, DAY_MS, day_cutoff) == 0, "the day tier's chunks committed"
    assert (await width_counts(admin)).get(HOUR_MS, 0) > 0, "and some of the hour tier's"
    not_yet = await admin.fetchval(
        "SELECT count(*) FROM counter_events WHERE width_ms = 0 AND bucket_start < $1",
        hour_cutoff,
    )
    assert not_yet > 1000, "killed mid-run: the hour tier's newer rows are not merged yet"

    before_rerun = await server_now(admin)
    finished = await run_compact(urls.service, "--chunk-rows", "200")
    assert finished.lines[-1].startswith("compacted: "), finished.output()
    assert re.search(r"^1h@1d: [\d,]+ rows merged into", finished.output(), re.M)
    await assert_sums_kept(admin, flusher.written, counted)
    await assert_compacted(admin, before_rerun, await server_now(admin))
    compacted = await event_rows(admin)
    layout = await width_counts(admin)
    assert layout.get(DAY_MS, 0) > 0, layout
    assert layout.get(HOUR_MS, 0) > 0, layout

    again = await run_compact(urls.service, "--chunk-rows", "200")
    tier_lines = [line for line in again.lines if line.startswith(("1d@30d:", "1h@1d:"))]
    assert len(tier_lines) == 2, again.output()
    assert all("nothing to merge" in line for line in tier_lines), again.output()
    assert again.lines[-1].startswith("compacted: 0 rows merged into 0 "), again.output()
    assert await event_rows(admin) == compacted


async def kill_mid_chunk(
    urls: Urls, admin: Connection, now: datetime, meanwhile: Callable[[], Awaitable[None]]
) -> int:
    """Run `distcount compact --chunk-rows 200` and SIGKILL it once it has reported merged rows,
    while a chunk half-way through the hour tier has deleted part of its rows: a reader of our
    own holds a row there, which the chunk's statement waits for. Runs `meanwhile` while the
    killed compactor's session still waits, then lets it go, waits for it to end, and returns
    the id of the row held."""
    locker = await connect(urls.admin)
    held = locker.transaction()
    await held.start()
    try:
        locked: int = await locker.fetchval(
            "SELECT id FROM counter_events WHERE bucket_start >= $1 ORDER BY bucket_start, id "
            "LIMIT 1 FOR UPDATE",
            floor_to(now - timedelta(days=15), HOUR_MS) + timedelta(minutes=30),
        )
        killed = await Command.start(urls.service, "compact", "--chunk-rows", "200")
        try:
            await killed.line(r"rows merged into", 60)
            blocked = await wait_value(
                lambda: waiting_backend(admin), 60, "the compactor to wait for the held row"
            )
            killed.proc.send_signal(signal.SIGKILL)
            assert await killed.wait(30) == -signal.SIGKILL
        finally:
            await killed.close()
        assert await waiting_backend(admin) == blocked, "its statement goes on, without client"
        deleted = await admin.fetchval(
            "SELECT count(*) FROM counter_events "
            "WHERE xmax = (SELECT backend_xid FROM pg_stat_activity WHERE pid = $1)",
            blocked,
        )
        assert deleted > 0, "the chunk had deleted some of its rows when it was killed"
        await meanwhile()
    finally:
        await held.rollback()
        await locker.close()
    # released, the statement ends, finds no client, and its transaction is rolled back
    await wait_until(lambda: backend_gone(admin, blocked), 60, "the killed session to end")
    return locked


async def run_compact(database_url: str, *args: str, **settings: str) -> Command:
    """`distcount compact <args>` to its end, which must be a success."""
    command = await Command.start(database_url, "compact", *args, **settings)
    try:
        assert await command.wait(120) == 0, command.output()
    finally:
        await command.close()
    assert command.lines, "it says what it did"
    return command


def without_boundary_buckets(history: Deltas, now: datetime) -> Deltas:
    """`history` without a bucket of each tier's width from its cutoff at `now` on: when the
    clock passes the next boundary during the test, no row comes of age for a tier."""
    hour_cutoff, day_cutoff = cutoffs(now)
    gaps = [(ms(hour_cutoff), ms(hour_cutoff) + HOUR_MS), (ms(day_cutoff), ms(day_cutoff) + DAY_MS)]
    return {s: b for s, b in history.items() if not any(lo <= s < hi for lo, hi in gaps)}


async def waiting_backend(conn: Connection) -> int | None:
    """The server pid of a session of this database waiting for a lock, if any."""
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() LIMIT 1"
    )
    return pid


async def backend_gone(conn: Connection, pid: int) -> bool:
    return not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


# -- test 2: passes while a real aggregator flushes into the buckets they merge ---------------

ROUNDS = 5
BATCHES_PER_ROUND = 12
RECORDS_PER_BATCH = 20
AGG_KEYS = [f"key-{i}" for i in range(8)]


@dataclass
class Rounds:
    """Where the producing stands, as the compactor's passes see it."""

    started: int = 0  # rounds whose producing has begun
    in_flight: bool = False  # a round being produced, or produced and not all flushed yet
    rows_merged: int = 0  # rows the passes deleted so far, fine and re-merged
    chunks: int = 0
    passes: list[Pass] = field(default_factory=list)


@dataclass(frozen=True)
class Pass:
    began_after: int  # the rounds all flushed when it began; -1 if one was in flight
    overlapped: bool  # a round was being produced or flushed during the pass
    chunks: int


async def test_compaction_while_an_aggregator_flushes_old_and_new_buckets(
    pipeline: Pipeline,
) -> None:
    await keep_records_forever(pipeline)
    # flushes every 20 ms: many of them commit while a chunk of the loop below runs
    aggregator = pipeline.start("aggregator", "aggregator", flush_interval_ms="20")
    produced: list[tuple[str, int, int]] = []  # key, value, timestamp (ms)
    rounds = Rounds()
    stop = asyncio.Event()
    # as the services' role, as `distcount compact` logs in
    compactor = asyncio.create_task(
        compact_in_a_loop(pipeline.env()["DISTCOUNT_DATABASE_URL"], rounds, stop)
    )
    try:
        await produce_rounds(pipeline, rounds, compactor, produced)
        assert aggregator.poll() is None, pipeline.log("aggregator")
    finally:
        stop.set()
        await asyncio.wait_for(compactor, 60)
    assert any(p.overlapped and p.chunks for p in rounds.passes), "passes ran during rounds"
    assert rounds.chunks >= ROUNDS

    await pipeline.wait_caught_up()
    before_last = await server_now_at(pipeline.database_url)
    last = await cli_compact(pipeline)
    assert last.returncode == 0, last.stdout + last.stderr
    assert last.stdout.splitlines()[-1].startswith("compacted: "), last.stdout + last.stderr
    await assert_counted_as_produced(pipeline.database_url, produced, before_last)


async def produce_rounds(
    pipeline: Pipeline,
    rounds: Rounds,
    compactor: asyncio.Task[None],
    produced: list[tuple[str, int, int]],
) -> None:
    """Each round: batches of increments stamped in each tier's range and now, flushed by the
    aggregator as they come, while the loop compacts; then a whole pass, before the next round
    flushes more rows into the buckets it merged. A CLI pass takes its turn in the middle."""
    rng = random.Random(4242)
    producer = AIOKafkaProducer(
        bootstrap_servers=pipeline.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    cli_pass: asyncio.Task[subprocess.CompletedProcess[str]] | None = None
    try:
        for number in range(1, ROUNDS + 1):
            rows_before = rounds.rows_merged
            rounds.started, rounds.in_flight = number, True
            for _ in range(BATCHES_PER_ROUND):
                now_ms = int(time.time() * 1000)
                batch = [round_record(rng, now_ms) for _ in range(RECORDS_PER_BATCH)]
                produced += batch
                await produce_at(producer, pipeline.topic, batch)
                await asyncio.sleep(0.03)
            if number == ROUNDS // 2 + 1:
                cli_pass = asyncio.create_task(cli_compact(pipeline))
            await pipeline.wait_caught_up()
            rounds.in_flight = False
            # a pass begun now that the round is all flushed: by its end, the round's old rows
            # are merged (by it, or by passes that ran while the round was being flushed)
            await wait_until(
                done_pass_after(rounds, number, compactor), 60, f"a pass after round {number}"
            )
            assert rounds.rows_merged > rows_before, f"round {number}'s old rows merged"
        assert cli_pass is not None
        cli = await cli_pass
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "compacted: " in cli.stdout, cli.stdout + cli.stderr
    finally:
        await producer.stop()
        if cli_pass is not None and not cli_pass.done():
            with contextlib.suppress(Exception):
                await cli_pass


async def assert_counted_as_produced(
    database_url: str, produced: list[tuple[str, int, int]], before_last: datetime
) -> None:
    conn = await connect(database_url)
    try:
        expected_totals: dict[str, int] = defaultdict(int)
        as_deltas: Deltas = defaultdict(dict)
        for key, value, stamp in produced:
            expected_totals[key] += value
            as_deltas[stamp][key] = as_deltas[stamp].get(key, 0) + value
        counted = {k: v for k, v in expected_totals.items() if v != 0}
        assert {k: v for k, v in (await totals(conn)).items() if v != 0} == counted
        assert await key_sums(conn) == counted
        after_last = await server_now(conn)
        hour_cutoff, day_cutoff = cutoffs(after_last)
        assert await step_sums(conn, DAY_MS) == expected_sums(as_deltas, DAY_MS)
        assert await step_sums(conn, HOUR_MS, day_cutoff) == expected_sums(
            as_deltas, HOUR_MS, day_cutoff
        )
        assert await step_sums(conn, MINUTE_MS, hour_cutoff) == expected_sums(
            as_deltas, MINUTE_MS, hour_cutoff
        )
        await assert_compacted(conn, before_last, after_last)
        layout = await width_counts(conn)
        assert layout.get(DAY_MS, 0) > 0, layout
        assert layout.get(HOUR_MS, 0) > 0, layout
        assert layout.get(0, 0) > 0, "the recent rows stay as flushed"
    finally:
        await conn.close()


def round_record(rng: random.Random, now_ms: int) -> tuple[str, int, int]:
    """An increment stamped ~40 days ago (the day tier's), ~2 days ago (the hour tier's) or in
    the last minutes (no tier's), far enough from every cutoff that the clock does not matter."""
    key, value = rng.choice(AGG_KEYS), rng.choice((1, 1, 2, 5, -3))
    match rng.randrange(3):
        case 0:
            stamp = now_ms - 40 * DAY_MS + rng.randrange(-2 * DAY_MS, 2 * DAY_MS)
        case 1:
            stamp = now_ms - 2 * DAY_MS + rng.randrange(-6 * HOUR_MS, 6 * HOUR_MS)
        case _:
            stamp = now_ms - rng.randrange(10 * MINUTE_MS)
    return key, value, stamp


async def keep_records_forever(pipeline: Pipeline) -> None:
    """Records stamped 40 days ago are past the broker's default retention (7 days): the topic
    keeps them, so that no retention check can delete a segment before it is consumed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.bootstrap)
    await admin.start()
    try:
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, pipeline.topic, {"retention.ms": "-1"})]
        )
        assert [error for r in responses for error, *_ in r.resources] == [0], responses
    finally:
        await admin.close()


async def produce_at(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[str, int, int]]
) -> None:
    """Send the increments with a plain producer, each record stamped with its timestamp."""
    futures = []
    for key, value, stamp in records:
        message_key, message = encode_record(Increment(key, value))
        futures.append(
            await producer.send(topic, value=message, key=message_key, timestamp_ms=stamp)
        )
    await asyncio.gather(*futures)


async def compact_in_a_loop(url: str, rounds: Rounds, stop: asyncio.Event) -> None:
    """Passes back to back, as the services' role, until `stop`; each tier's range is a chunk
    or two, so that a flush of old rows lands in the range of the chunk it overlaps."""
    conn = await connect(url)
    try:
        while not stop.is_set():
            began_after = -1 if rounds.in_flight else rounds.started
            started, overlapped = rounds.started, rounds.in_flight
            chunks = 0
            async with compaction_lock(conn):
                async for event in compaction(conn, TIERS, chunk_rows=400):
                    if isinstance(event, Merged):
                        chunks += 1
                        rounds.chunks += 1
                        rounds.rows_merged += event.rows_in
                        overlapped = overlapped or rounds.in_flight
            overlapped = overlapped or rounds.in_flight or rounds.started != started
            rounds.passes.append(Pass(began_after, overlapped, chunks))
            await asyncio.sleep(0)
    finally:
        await conn.close()


def done_pass_after(
    rounds: Rounds, number: int, compactor: asyncio.Task[None]
) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        if compactor.done():
            compactor.result()  # its error, if it failed
            raise AssertionError("the compaction loop ended")
        return any(p.began_after == number for p in rounds.passes)

    return done


async def cli_compact(pipeline: Pipeline) -> subprocess.CompletedProcess[str]:
    """`distcount compact` with the pipeline's settings: as the services' role, DISTCOUNT_ROLLUP
    left to its default (`1h@1d,1d@30d`, the tiers of the loop)."""
    return await pipeline.cli("compact", "--chunk-rows", "50")


async def server_now_at(url: str) -> datetime:
    conn = await connect(url)
    try:
        return await server_now(conn)
    finally:
        await conn.close()


# -- test 3: --schedule, stopped by SIGTERM ----------------------------------------------------


async def test_scheduled_compaction_merges_every_interval_and_stops_on_sigterm(
    urls: Urls, admin: Connection, service: Connection
) -> None:
    now = await server_now(admin)
    hour_cutoff, _ = cutoffs(now)
    history = random_history(
        random.Random(3), ["a", "b", "c"], now - timedelta(days=3), now, 5 * MINUTE_MS
    )
    flusher = Flusher(service)
    await flusher.flush(history)
    counted = await totals(admin)

    # 1000 ms: the least DISTCOUNT_COMPACT_INTERVAL_MS takes
    scheduled = await Command.start(
        urls.service, "compact", "--schedule", "--chunk-rows", "100", compact_interval_ms="1000"
    )
    try:
        await scheduled.line(r"compacted: [1-9][\d,]* rows merged", 60)
        assert await finer_than(admin, HOUR_MS, hour_cutoff) == 0
        passes_before = len(passes_done(scheduled))
        # an aggregator that lagged flushes into a bucket already merged: a later pass merges it
        late = {ms(hour_cutoff) - 5 * HOUR_MS + 7 * MINUTE_MS: {"a": 11, "late": 4}}
        await flusher.flush(late)
        counted = await totals(admin)
        await wait_until(
            lambda: no_finer_than(admin, HOUR_MS, hour_cutoff), 30, "a later pass to merge"
        )
        await wait_until(
            lambda: merging_pass_since(scheduled, passes_before), 30, "that pass to report"
        )

        sent = time.monotonic()
        scheduled.proc.send_signal(signal.SIGTERM)
        code = await scheduled.wait(15)
        took = time.monotonic() - sent
    finally:
        await scheduled.close()
    assert code == 0, scheduled.output()
    assert took < 10, f"stopped in {took:.1f} s"
    assert "compacting every 1 s" in scheduled.output()
    assert "compaction stopped" in scheduled.lines[-1], scheduled.output()
    assert "Traceback" not in scheduled.output()
    await assert_sums_kept(admin, flusher.written, counted)
    assert await duplicates(admin) == 0
    assert (await width_counts(admin)).get(HOUR_MS, 0) > 0


async def test_scheduled_compaction_waiting_for_another_compactor_stops_on_sigterm(
    urls: Urls, service: Connection
) -> None:
    async with compaction_lock(service):  # another compactor, with a long run to go
        scheduled = await Command.start(
            urls.service, "compact", "--schedule", compact_interval_ms="1000"
        )
        try:
            await scheduled.line(r"another compactor is running", 60)
            scheduled.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await scheduled.wait(5)
            assert scheduled.proc.returncode == 0, "stopped within 5 s of SIGTERM"
            assert "compaction stopped" in scheduled.lines[-1], scheduled.output()
        finally:
            await scheduled.close()
        # a run of its own, stopped as it waits, says that it did nothing, and exits 130
        once = await Command.start(urls.service, "compact")
        try:
            await once.line(r"another compactor is running", 60)
            once.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await once.wait(5)
            assert once.proc.returncode == 130, once.output()
            assert "nothing was done" in once.output()
        finally:
            await once.close()


# -- old rows that were merged into hours come of age for the day tier -----------------------


async def test_hour_rows_that_age_past_the_day_cutoff_are_merged_into_days(
    urls: Urls, admin: Connection, service: Connection
) -> None:
    now = await server_now(admin)
    history = random_history(
        random.Random(5), ["a", "b", "c"], now - timedelta(days=36), now, 10 * MINUTE_MS
    )
    flusher = Flusher(service)
    await flush_in_parts(flusher, without_boundary_buckets(history, now), buckets_per_flush=2000)
    # the layout a pass four days ago left: since then, four days of hour rows have aged past
    # the day tier's cutoff, with no row finer than an hour among them
    earlier = now - timedelta(days=4)
    async with compaction_lock(service):
        async for _ in compaction(service, TIERS, now=earlier, chunk_rows=1000):
            pass
    _, day_cutoff = cutoffs(now)
    aged = await admin.fetchval(
        "SELECT count(*) FROM counter_events WHERE width_ms = $1 AND bucket_start < $2",
        HOUR_MS,
        day_cutoff,
    )
    assert aged > 200, "several chunks of 50 rows"
    assert (
        await admin.fetchval(
            "SELECT count(*) FROM counter_events WHERE width_ms = 0 AND bucket_start < $1",
            day_cutoff,
        )
        == 0
    )
    counted = await totals(admin)

    before = await server_now(admin)
    done = await run_compact(urls.service, "--chunk-rows", "50")
    assert re.search(r"^1d@30d: [\d,]+ rows merged into", done.output(), re.M), done.output()
    await assert_sums_kept(admin, flusher.written, counted)
    await assert_compacted(admin, before, await server_now(admin))


def passes_done(command: Command) -> list[str]:
    return [line for line in command.lines if "compacted: " in line]


async def merging_pass_since(command: Command, passes_before: int) -> bool:
    return any(
        re.search(r"compacted: [1-9][\d,]* rows merged", line)
        for line in passes_done(command)[passes_before:]
    )


# -- what the tests share ----------------------------------------------------------------------


class Command:
    """`distcount <args>` in a process of its own (as the services' role), its standard output
    and error read line by line as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._more = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, database_url: str, *args: str, **settings: str) -> Command:
        env = clean_environ()
        env["DISTCOUNT_DATABASE_URL"] = database_url
        env.update({f"DISTCOUNT_{name.upper()}": value for name, value in settings.items()})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "distcount_cli",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self._more.set()
        finally:
            self._more.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    async def line(self, pattern: str, timeout_s: float) -> str:
        """The first line matching `pattern`, waiting for it up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            if self._reader.done():
                raise AssertionError(f"no line matches {pattern!r}; output:\n{self.output()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; output:\n{self.output()}")
            self._more.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._more.wait(), left)

    async def wait(self, timeout_s: float) -> int:
        """The exit status, once the process has ended and all its output is read."""
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await asyncio.wait_for(self._reader, timeout_s)
        return code

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 10)


async def server_now(conn: Connection) -> datetime:
    now: datetime = await conn.fetchval("SELECT statement_timestamp()")
    return now


def cutoffs(now: datetime) -> tuple[datetime, datetime]:
    """(the hour tier's cutoff, the day tier's cutoff) of a pass at `now`, worked out here rather
    than by the code under test: `now` less the age, down to a whole bucket of the width."""
    day = floor_to(now - timedelta(days=30), DAY_MS)
    return max(floor_to(now - timedelta(days=1), HOUR_MS), day), day


def floor_to(moment: datetime, width_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms(moment) // width_ms * width_ms)


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_value(
    probe: Callable[[], Awaitable[int | None]], timeout_s: float, what: str
) -> int:
    deadline = time.monotonic() + timeout_s
    while (value := await probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def key_sums(conn: Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT key, sum(delta) AS s FROM counter_events GROUP BY key HAVING sum(delta) <> 0"
    )
    return {r["key"]: int(r["s"]) for r in rows}


async def width_counts(conn: Connection) -> dict[int, int]:
    rows = await conn.fetch("SELECT width_ms, count(*) AS n FROM counter_events GROUP BY 1")
    return {r["width_ms"]: r["n"] for r in rows}


async def finer_than(conn: Connection, width_ms: int, cutoff: datetime) -> int:
    """Rows finer than `width_ms` whose bucket starts before `cutoff`."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM counter_events WHERE width_ms < $1 AND bucket_start < $2",
        width_ms,
        cutoff,
    )
    return count


async def no_finer_than(conn: Connection, width_ms: int, cutoff: datetime) -> bool:
    return await finer_than(conn, width_ms, cutoff) == 0


async def assert_sums_kept(
    conn: Connection, written: Mapping[int, Mapping[str, int]], counted: Mapping[str, int]
) -> None:
    """Every key's total as counted, the event log summing to it, and the sums per day, per
    hour where no day row can be, and per minute where no rollup can reach, as flushed."""
    hour_cutoff, day_cutoff = cutoffs(await server_now(conn))  # no pass so far reached past
    assert await totals(conn) == counted
    assert await key_sums(conn) == {k: v for k, v in counted.items() if v != 0}
    assert await step_sums(conn, DAY_MS) == expected_sums(written, DAY_MS)
    assert await step_sums(conn, HOUR_MS, day_cutoff) == expected_sums(written, HOUR_MS, day_cutoff)
    assert await step_sums(conn, MINUTE_MS, hour_cutoff) == expected_sums(
        written, MINUTE_MS, hour_cutoff
    )


async def assert_compacted(conn: Connection, before: datetime, after: datetime) -> None:
    """The layout a complete pass that began between `before` and `after` leaves: nothing finer
    than a tier's width before its cutoff, merged rows of the tiers' widths only, aligned to
    them, one per key and bucket, and none at or past the cutoff of a pass at `after`."""
    hour_before, day_before = cutoffs(before)
    hour_after, day_after = cutoffs(after)
    assert await finer_than(conn, DAY_MS, day_before) == 0
    assert await finer_than(conn, HOUR_MS, hour_before) == 0
    assert await duplicates(conn) == 0
    misplaced = await conn.fetch(
        """
        SELECT key, bucket_start, width_ms FROM counter_events
        WHERE width_ms > 0 AND (
            NOT width_ms = ANY($1::int[])
            OR (extract(epoch FROM bucket_start) * 1000)::bigint % width_ms <> 0
            OR (width_ms = $2 AND bucket_start >= $3)
            OR (width_ms = $4 AND bucket_start >= $5)
        )
        """,
        sorted(WIDTHS),
        DAY_MS,
        day_after,
        HOUR_MS,
        hour_after,
    )
    assert misplaced == []
