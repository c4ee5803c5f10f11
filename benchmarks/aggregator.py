"""The aggregator against a bare aiokafka consume loop, on the same topic, in the same run.

A fresh topic is pre-filled with N single-increment records over K keys (codec.encode_record
values, message key = counter key, partitioned as the default partitioner would). Then, R times,
interleaved:

- bare: benchmarks/bare_consumer.py, a child process running an AIOKafkaConsumer with the
  options of distcount_aggregator.consumer_options (own group id) whose getmany loop orjson-decodes
  every value and discards it; done when its position in every partition reaches the end offset.
- ours: `python -m distcount_cli aggregator` (the real process) into a fresh, migrated database;
  done when the sum of consumer_offsets.next_offset for its group equals the topic's end offsets
  (polled every 100 ms); then the totals are checked (sum = N, count = keys) and it gets SIGTERM.

Both are timed the same way, from the spawn of the child process to done. The headline is the
ratio of the medians of records/s; the floor is 0.5. Figures measured from each process's first
partition assignment are reported beside it, labelled "excluding startup".

    .venv/bin/python benchmarks/aggregator.py [--records 1000000] [--keys 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

import distcount_aggregator
from _common import (
    BENCH_DIR,
    PYTHON,
    RESULTS_DIR,
    Child,
    Endpoints,
    Line,
    background_busy,
    child_env,
    end_offsets,
    error_lines,
    failed_report,
    fresh_database,
    fresh_topic,
    machine_facts,
    markdown_table,
    median,
    postgres_facts,
    random_suffix,
    redacted,
    say,
    utc_stamp,
    write_report,
)
from distcount_codec import Increment, encode_record
from distcount_config import Settings, load

FLOOR = 0.5
POLL_S = 0.1


@dataclass
class RunResult:
    side: str  # "bare" or "ours"
    index: int
    records: int
    wall_s: float  # process spawn -> done
    startup_s: float | None  # process spawn -> first partition assignment
    cpu_s: float | None  # the child process's own CPU time when done
    exit_status: int | None
    shutdown_s: float
    checks: dict[str, Any]
    background_busy: float | None = None  # machine busy just before the child was spawned

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def after_assignment_s(self) -> float | None:
        return None if self.startup_s is None else self.wall_s - self.startup_s

    @property
    def records_per_s_after_assignment(self) -> float | None:
        after = self.after_assignment_s
        return None if not after else self.records / after

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "records_per_s": self.records_per_s,
            "after_assignment_s": self.after_assignment_s,
            "records_per_s_after_assignment": self.records_per_s_after_assignment,
        }


# -- the consumer options both sides use ----------------------------------------------------------


def consumer_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments the aggregator gives AIOKafkaConsumer."""
    options = distcount_aggregator.consumer_options(settings)
    json.dumps(options)  # the bare consumer gets them on its command line
    return options


def getmany_max_records(settings: Settings) -> tuple[int, str]:
    """The `max_records` the aggregator passes to getmany, and where that figure came from."""
    return distcount_aggregator.MAX_RECORDS_PER_FETCH, "distcount_aggregator.MAX_RECORDS_PER_FETCH"


# -- pre-fill -------------------------------------------------------------------------------------


async def prefill(
    bootstrap: str, topic: str, *, partitions: int, records: int, keys: int, spread_ms: int
) -> dict[str, Any]:
    """records single increments over `keys` keys, key i % keys for record i, with timestamps
    spread evenly over `spread_ms` ending now. Batches are built directly (one per partition at
    a time, up to 1 MB each) rather than record by record through send()."""
    encoded = [encode_record(Increment(f"k{i}", 1)) for i in range(keys)]
    choose = DefaultPartitioner()
    all_partitions = list(range(partitions))
    key_partition = [choose(key, all_partitions, all_partitions) for key, _ in encoded]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=50,
        max_batch_size=1_000_000,
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=60_000,
    )
    await asyncio.wait_for(producer.start(), 30)
    started = time.monotonic()
    base_ms = int(time.time() * 1000) - spread_ms
    sent: list[asyncio.Future[Any]] = []
    builders = [producer.create_batch() for _ in range(partitions)]
    try:
        step = max(1, records // 10)
        for i in range(records):
            key_index = i % keys
            partition = key_partition[key_index]
            key, value = encoded[key_index]
            timestamp = base_ms + (i * spread_ms) // records
            if builders[partition].append(timestamp=timestamp, key=key, value=value) is None:
                sent.append(
                    await producer.send_batch(builders[partition], topic, partition=partition)
                )
                builders[partition] = producer.create_batch()
                if builders[partition].append(timestamp=timestamp, key=key, value=value) is None:
                    raise RuntimeError("one record does not fit an empty batch")
            if (i + 1) % step == 0:
                say(f"pre-fill: {i + 1:,}/{records:,} records appended")
        for partition, builder in enumerate(builders):
            if builder.record_count():
                sent.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.wait_for(asyncio.gather(*sent), 120)
    finally:
        await asyncio.wait_for(producer.stop(), 60)
    seconds = time.monotonic() - started
    ends = await end_offsets(bootstrap, topic)
    total = sum(ends.values())
    if total != records:
        raise RuntimeError(f"the topic holds {total} records after the pre-fill, not {records}")
    say(f"pre-fill: {records:,} records in {seconds:.1f} s ({records / seconds:,.0f}/s)")
    return {
        "seconds": seconds,
        "records_per_s": records / seconds,
        "batches": len(sent),
        "end_offsets": ends,
        "spread_ms": spread_ms,
    }


# -- the two sides --------------------------------------------------------------------------------


def _relay(side: str, expected: int) -> Callable[[Line], None]:
    def on_line(line: Line) -> None:
        if line.text.startswith("progress "):
            count = int(line.text.split()[1])
            say(f"  {side}: {count:,}/{expected:,} records read")
        elif line.stream == "err" and (" ERROR " in line.text or "Traceback" in line.text):
            say(f"  {side} stderr: {line.text}")

    return on_line


async def run_bare(
    index: int,
    topic: str,
    *,
    options: dict[str, Any],
    ends: dict[int, int],
    max_records: int,
    timeout_s: float,
    wait_quiet_s: float,
    log_dir: Path,
) -> RunResult:
    expected = sum(ends.values())
    suffix = random_suffix()
    options = {**options, "group_id": f"bench-bare-{suffix}", "client_id": f"bench-bare-{suffix}"}
    argv = [
        PYTHON,
        str(BENCH_DIR / "bare_consumer.py"),
        "--topic",
        topic,
        "--options",
        json.dumps(options),
        "--end-offsets",
        json.dumps(ends),
        "--max-records",
        str(max_records),
        "--timeout-s",
        str(timeout_s),
    ]
    idle = await background_busy(wait_quiet_s)
    say(f"run {index} bare: spawning the bare consumer (group {options['group_id']})")
    child = await Child.spawn(
        "bare consumer",
        argv,
        child_env({}),
        log_dir / f"run{index}-bare.log",
        on_line=_relay("bare", expected),
    )
    try:
        done = await child.wait_for_line(lambda text: text.startswith("done "), timeout_s + 30)
    finally:
        status, shutdown_s = await child.stop()
    report = json.loads(done.text.removeprefix("done "))
    assigned = next((ln for ln in child.lines if ln.text.startswith("assigned ")), None)
    result = RunResult(
        side="bare",
        index=index,
        records=report["records"],
        wall_s=done.at - child.spawned_at,
        startup_s=None if assigned is None else assigned.at - child.spawned_at,
        cpu_s=report["cpu_seconds"],
        exit_status=status,
        shutdown_s=shutdown_s,
        checks={
            "correct": report["records"] == expected,
            "records_read": report["records"],
            "delivered_twice": report["delivered_twice"],
            "child_report": report,
        },
        background_busy=idle,
    )
    say(
        f"run {index} bare: {result.records:,} records in {result.wall_s:.2f} s "
        f"({result.records_per_s:,.0f}/s)"
    )
    return result


async def run_ours(
    index: int,
    endpoints: Endpoints,
    *,
    database_url: str,
    topic: str,
    flush_interval_ms: int,
    expected: int,
    keys: int,
    timeout_s: float,
    wait_quiet_s: float,
    log_dir: Path,
) -> RunResult:
    group = f"bench-ours-{random_suffix()}"
    env = child_env(ours_environment(endpoints, database_url, topic, group, flush_interval_ms))
    conn = await asyncpg.connect(database_url, timeout=10)  # opened before the clock starts
    idle = await background_busy(wait_quiet_s)
    try:
        say(f"run {index} ours: spawning `distcount aggregator` (group {group})")
        child = await Child.spawn(
            "aggregator",
            [PYTHON, "-m", "distcount_cli", "aggregator"],
            env,
            log_dir / f"run{index}-ours.log",
            on_line=_relay("ours", expected),
        )
        try:
            done_at, cpu_s = await _wait_until_flushed(
                conn, child, group=group, topic=topic, expected=expected, timeout_s=timeout_s
            )
        finally:
            status, shutdown_s = await child.stop()
        checks = await _check_totals(conn, group, topic, expected, keys)
        await conn.execute("TRUNCATE counter_events, counter_totals, consumer_offsets")
    finally:
        await conn.close()
    assigned = next((ln for ln in child.lines if "assigned partitions" in ln.text), None)
    result = RunResult(
        side="ours",
        index=index,
        records=expected,
        wall_s=done_at - child.spawned_at,
        startup_s=None if assigned is None else assigned.at - child.spawned_at,
        cpu_s=cpu_s,
        exit_status=status,
        shutdown_s=shutdown_s,
        checks=checks,
        background_busy=idle,
    )
    verdict = "correct" if checks["correct"] else "WRONG TOTALS"
    say(
        f"run {index} ours: {expected:,} records flushed in {result.wall_s:.2f} s "
        f"({result.records_per_s:,.0f}/s), totals {verdict}; exit status {status} "
        f"after SIGTERM ({shutdown_s:.2f} s)"
    )
    return result


def ours_environment(
    endpoints: Endpoints, database_url: str, topic: str, group: str, flush_interval_ms: int
) -> dict[str, str]:
    return {
        "DISTCOUNT_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "DISTCOUNT_DATABASE_URL": database_url,
        "DISTCOUNT_TOPIC": topic,
        "DISTCOUNT_GROUP_ID": group,
        "DISTCOUNT_FLUSH_INTERVAL_MS": str(flush_interval_ms),
        # the "assigned partitions" line, which dates the end of start-up, is logged at info
        "DISTCOUNT_LOG_LEVEL": "info",
    }


async def _wait_until_flushed(
    conn: asyncpg.Connection,
    child: Child,
    *,
    group: str,
    topic: str,
    expected: int,
    timeout_s: float,
) -> tuple[float, float | None]:
    """(time.monotonic() when PostgreSQL held every offset, the child's CPU seconds then)."""
    deadline = time.monotonic() + timeout_s
    next_progress = time.monotonic() + 2.0
    while True:
        flushed = await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets "
            "WHERE group_id = $1 AND topic = $2",
            group,
            topic,
        )
        now = time.monotonic()
        if flushed >= expected:
            return now, child.cpu_seconds()
        if not child.running():
            raise RuntimeError(
                f"the aggregator exited with status {child.process.returncode} after "
                f"flushing {flushed} of {expected} records; see {child.log_path}\n{child.tail()}"
            )
        if now > deadline:
            raise TimeoutError(f"the aggregator flushed {flushed} of {expected} in {timeout_s} s")
        if now >= next_progress:
            say(f"  ours: {int(flushed):,}/{expected:,} offsets flushed to PostgreSQL")
            next_progress = now + 2.0
        await asyncio.sleep(POLL_S)


async def _check_totals(
    conn: asyncpg.Connection, group: str, topic: str, expected: int, keys: int
) -> dict[str, Any]:
    totals = await conn.fetchrow(
        "SELECT coalesce(sum(value), 0) AS s, count(*) AS n FROM counter_totals"
    )
    events = await conn.fetchrow(
        "SELECT coalesce(sum(delta), 0) AS s, count(*) AS n FROM counter_events"
    )
    offsets = await conn.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets "
        "WHERE group_id = $1 AND topic = $2",
        group,
        topic,
    )
    expected_keys = min(expected, keys)
    assert totals is not None
    assert events is not None
    checks: dict[str, Any] = {
        "totals_sum": int(totals["s"]),
        "totals_keys": totals["n"],
        "events_sum": int(events["s"]),
        "event_rows": events["n"],
        "offsets_sum": int(offsets),
        "expected_sum": expected,
        "expected_keys": expected_keys,
    }
    checks["correct"] = (
        checks["totals_sum"] == expected
        and checks["totals_keys"] == expected_keys
        and checks["events_sum"] == expected
        and checks["offsets_sum"] == expected
    )
    return checks


# -- the report -----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _check_cell(run: RunResult) -> str:
    if run.side == "bare":
        twice = run.checks["delivered_twice"]
        read = "all read" if run.checks["correct"] else "NOT ALL READ"
        return read + (f", {twice:,} handed twice" if twice else "")
    return "totals correct" if run.checks["correct"] else "TOTALS WRONG"


def build_report(
    meta: dict[str, Any], runs: list[RunResult], error: str | None
) -> tuple[dict[str, Any], str]:
    bare = [r for r in runs if r.side == "bare"]
    ours = [r for r in runs if r.side == "ours"]
    if not bare or not ours:
        return _failed_report(meta, runs, error or "no runs")
    bare_rps = median([r.records_per_s for r in bare])
    ours_rps = median([r.records_per_s for r in ours])
    ratio = ours_rps / bare_rps
    correct = all(r.checks["correct"] for r in runs)
    passed = ratio >= FLOOR and correct

    def after(side: list[RunResult]) -> float | None:
        values = [r.records_per_s_after_assignment for r in side]
        known = [v for v in values if v is not None]
        return median(known) if len(known) == len(values) and known else None

    bare_after, ours_after = after(bare), after(ours)
    ratio_after = ours_after / bare_after if bare_after and ours_after else None
    startup = {
        "bare": median([r.startup_s for r in bare if r.startup_s is not None]),
        "ours": median([r.startup_s for r in ours if r.startup_s is not None]),
    }
    summary: dict[str, Any] = {
        "median_records_per_s": {"bare": bare_rps, "ours": ours_rps},
        "ratio": ratio,
        "floor": FLOOR,
        "verdict": "ERROR" if error else "PASS" if passed else "FAIL",
        "error": error,
        "all_totals_correct": correct,
        "excluding_startup": {
            "median_records_per_s": {"bare": bare_after, "ours": ours_after},
            "ratio": ratio_after,
        },
        "median_startup_s": startup,
    }
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}

    w = meta["workload"]
    m = meta["machine"]
    rows = [
        [
            r.index,
            r.side,
            r.records,
            _fmt(r.wall_s),
            f"{r.records_per_s:,.0f}",
            _fmt(r.startup_s),
            _fmt(r.after_assignment_s),
            _fmt(r.records_per_s_after_assignment, 0),
            _fmt(r.cpu_s),
            "-" if r.background_busy is None else f"{r.background_busy:.0%}",
            _check_cell(r),
        ]
        for r in runs
    ]
    md = [
        f"# Aggregator benchmark, {meta['stamp']}",
        "",
        f"Machine: nproc {m['nproc']} ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}; Kafka {meta['kafka_bootstrap']}, PostgreSQL "
        f"{meta['postgres']['server_version']} (synchronous_commit "
        f"{meta['postgres']['synchronous_commit']}). The broker, PostgreSQL, the consumer under "
        "test and this script share these cores.",
        "",
        f"Workload: {w['records']:,} single-increment records over {w['keys']:,} keys in a fresh "
        f"topic of {w['partitions']} partitions, timestamps spread over {w['spread_ms']} ms; "
        f"aggregator flush interval {w['flush_interval_ms']} ms; the bare loop's getmany "
        f"max_records {w['max_records']:,} (from {w['max_records_source']}); {w['repeat']} runs "
        "per side, interleaved.",
        "",
        "Both sides are child processes, timed from spawn to done: bare = it has read every "
        "record; ours = PostgreSQL's consumer_offsets for its group add up to the topic's end "
        f"offsets (polled every {int(POLL_S * 1000)} ms). Start-up = spawn to first partition "
        'assignment (from the process\'s own output); "excluding startup" = first assignment '
        "to done. CPU = the child process's own user+system time (not the broker's, not "
        "PostgreSQL's). Busy before = the whole machine's CPU use in the second before the "
        "child was spawned; well above a few percent, other processes skewed the run.",
        "",
        markdown_table(
            [
                "run",
                "side",
                "records",
                "wall s",
                "records/s",
                "start-up s",
                "after assignment s",
                "records/s excluding startup",
                "CPU s",
                "busy before",
                "check",
            ],
            rows,
        ),
        "",
        markdown_table(
            ["", "bare (aiokafka getmany + orjson)", "ours (distcount aggregator)", "ratio"],
            [
                ["median records/s", f"{bare_rps:,.0f}", f"{ours_rps:,.0f}", f"{ratio:.3f}"],
                [
                    "median records/s, excluding startup",
                    _fmt(bare_after, 0),
                    _fmt(ours_after, 0),
                    _fmt(ratio_after, 3),
                ],
                [
                    "median start-up s",
                    _fmt(startup["bare"]),
                    _fmt(startup["ours"]),
                    "",
                ],
            ],
        ),
        "",
        f"**Headline: ours / bare = {ratio:.3f} (ratio of median records/s, spawn to done); "
        f"floor {FLOOR}: {summary['verdict']}**"
        + ("" if correct else " (a check failed in at least one run: see the table)"),
        *error_lines(error),
        "",
        "Peers: faust-streaming and Quix Streams were **not run** (not installed in this "
        "environment); no peer figures are claimed.",
    ]
    return data, "\n".join(md)


def _failed_report(
    meta: dict[str, Any], runs: list[RunResult], error: str
) -> tuple[dict[str, Any], str]:
    lines = [f"- run {r.index} {r.side}: {r.records_per_s:,.0f} records/s" for r in runs]
    return failed_report("Aggregator benchmark", meta, [r.as_dict() for r in runs], lines, error)


# -- main -----------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    endpoints = Endpoints.from_env()
    stamp = utc_stamp()
    log_dir = RESULTS_DIR / "logs" / f"aggregator-{stamp}"
    say(
        f"aggregator benchmark: {args.records:,} records, {args.keys:,} keys, "
        f"{args.partitions} partitions, {args.repeat} runs per side; Kafka "
        f"{endpoints.kafka_bootstrap}, PostgreSQL {redacted(endpoints.database_url)}"
    )
    machine = machine_facts()
    runs: list[RunResult] = []
    error: str | None = None
    async with (
        fresh_topic(endpoints.kafka_bootstrap, "bench.aggregator", args.partitions) as topic,
        fresh_database(endpoints, "bench_agg") as database_url,
    ):
        settings = load(
            child_env(ours_environment(endpoints, database_url, topic, "x", args.flush_interval_ms))
        )
        options = consumer_options(settings)
        max_records, max_records_source = getmany_max_records(settings)
        if args.max_records:
            max_records, max_records_source = args.max_records, "--max-records"
        say(f"consumer options (from consumer_options): {options}")
        say(f"getmany max_records for both sides: {max_records} (from {max_records_source})")
        fill = await prefill(
            endpoints.kafka_bootstrap,
            topic,
            partitions=args.partitions,
            records=args.records,
            keys=args.keys,
            spread_ms=args.spread_ms,
        )
        pg = await postgres_facts(database_url)
        try:
            for index in range(1, args.repeat + 1):
                runs.append(
                    await run_bare(
                        index,
                        topic,
                        options=options,
                        ends=fill["end_offsets"],
                        max_records=max_records,
                        timeout_s=args.timeout_s,
                        wait_quiet_s=args.wait_quiet_s,
                        log_dir=log_dir,
                    )
                )
                runs.append(
                    await run_ours(
                        index,
                        endpoints,
                        database_url=database_url,
                        topic=topic,
                        flush_interval_ms=args.flush_interval_ms,
                        expected=args.records,
                        keys=args.keys,
                        timeout_s=args.timeout_s,
                        wait_quiet_s=args.wait_quiet_s,
                        log_dir=log_dir,
                    )
                )
        except Exception as exc:  # report what was measured, and why the rest was not
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            say(f"stopped early: {exc}")
    meta = {
        "benchmark": "aggregator",
        "stamp": stamp,
        "machine": machine,
        "kafka_bootstrap": endpoints.kafka_bootstrap,
        "postgres": pg,
        "workload": {
            "records": args.records,
            "keys": args.keys,
            "partitions": args.partitions,
            "spread_ms": args.spread_ms,
            "flush_interval_ms": args.flush_interval_ms,
            "bucket_ms": settings.bucket_ms,
            "max_records": max_records,
            "max_records_source": max_records_source,
            "repeat": args.repeat,
        },
        "consumer_options": options,
        "prefill": fill,
        "logs": str(log_dir),
        "peers": "faust-streaming and Quix Streams not run (not installed)",
    }
    data, markdown = build_report(meta, runs, error)
    write_report("aggregator", stamp, data, markdown)
    verdict = data["summary"]["verdict"]
    return 0 if verdict == "PASS" else 1 if verdict == "FAIL" else 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description="distcount's aggregator against a bare aiokafka consume loop."
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="records to pre-fill")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct counter keys")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topic")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side, interleaved")
    parser.add_argument(
        "--flush-interval-ms", type=int, default=1000, help="DISTCOUNT_FLUSH_INTERVAL_MS for ours"
    )
    parser.add_argument(
        "--spread-ms", type=int, default=5000, help="record timestamps spread over this many ms"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=600.0, help="give up on one run after this long"
    )
    parser.add_argument(
        "--max-records",
        type=int,
        default=0,
        help="getmany max_records of the bare loop (default: the aggregator's own figure)",
    )
    parser.add_argument(
        "--wait-quiet-s",
        type=float,
        default=60.0,
        help="before each run, wait up to this long for other processes to leave the CPU idle",
    )
    args = parser.parse_args()
    if args.records < 1 or args.keys < 1 or args.repeat < 1 or args.partitions < 1:
        parser.error("--records, --keys, --repeat and --partitions must be at least 1")
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(bench(args)))
    raise SystemExit(130)


if __name__ == "__main__":
    main()
