"""The aggregator against a bare aiokafka consume loop, on the same topic, in the same run.

A fresh topic is pre-filled with N single-increment records over K keys. Then R times,
interleaved, bare first, each side a child process timed from its spawn to done:

- bare: benchmarks/bare_consumer.py, an AIOKafkaConsumer with the aggregator's own options
  (`distcount_aggregator.consumer_options`, its own group id) whose getmany loop orjson-decodes
  every value; done when its position in every partition reaches the end offset.
- ours: `distcount aggregator` into a fresh, migrated database, as the services' role; done
  when consumer_offsets for its group add up to the topic's end offsets; then the totals are
  checked exactly and it gets SIGTERM.

Headline: median records/s of ours / median records/s of bare; floor 0.5.

    .venv/bin/python benchmarks/aggregator.py [--records 1000000] [--keys 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

import distcount_aggregator
import harness as h
from distcount_codec import Increment, encode_record
from distcount_config import load

FLOOR = h.Limit(0.5, floor=True)
POLL_S = h.POLL_S
SIDES = ("bare", "ours")
_OFFSETS = h.STORED_OFFSETS


@dataclass(frozen=True)
class Bench:
    args: argparse.Namespace
    private: h.Private
    ends: dict[int, int]
    options: dict[str, Any]  # AIOKafkaConsumer's keyword arguments, the aggregator's own
    max_records: int
    log_dir: Path

    @property
    def expected(self) -> int:
        return sum(self.ends.values())


async def run_bare(b: Bench, index: int) -> h.ConsumeRun:
    group = f"bench-bare-{h.suffix()}"
    options = {**b.options, "group_id": group, "client_id": group}
    argv = [h.PYTHON, str(h.BENCH_DIR / "bare_consumer.py"), "--topic", b.private.topic]
    argv += ["--options", json.dumps(options), "--end-offsets", json.dumps(b.ends)]
    argv += ["--max-records", str(b.max_records), "--timeout-s", str(b.args.timeout_s)]
    idle = await h.background_busy(b.args.wait_quiet_s)
    h.say(f"run {index} bare: spawning the bare consumer (group {group})")
    return await h.run_reader(
        "bare",
        index,
        argv,
        h.child_env({}),
        expected=b.expected,
        timeout_s=b.args.timeout_s,
        log_dir=b.log_dir,
        background_busy=idle,
    )


def ours_settings(group: str, flush_interval_ms: int) -> dict[str, str]:
    return {
        "DISTCOUNT_GROUP_ID": group,
        "DISTCOUNT_FLUSH_INTERVAL_MS": str(flush_interval_ms),
        # the "assigned partitions" line, which dates the end of start-up, is logged at info
        "DISTCOUNT_LOG_LEVEL": "info",
    }


async def run_ours(b: Bench, index: int) -> h.ConsumeRun:
    group = f"bench-ours-{h.suffix()}"
    env = b.private.env(ours_settings(group, b.args.flush_interval_ms))
    # as the owner: the checks read every table and the clean-up truncates them
    conn = await asyncpg.connect(
        b.private.database.owner_url, timeout=10
    )  # before the clock starts
    try:
        idle = await h.background_busy(b.args.wait_quiet_s)
        h.say(f"run {index} ours: spawning `distcount aggregator` (group {group})")
        log = b.log_dir / f"run{index}-ours.log"
        child = await h.spawn_service("aggregator", env, log, h.relay("ours", b.expected))
        try:
            done_at, cpu_s = await h.wait_until_flushed(
                conn,
                child,
                label="ours",
                group=group,
                topic=b.private.topic,
                expected=b.expected,
                timeout_s=b.args.timeout_s,
            )
        finally:
            status, shutdown_s = await child.stop()
        checks = await _check_totals(conn, group, b)
        await conn.execute("TRUNCATE counter_events, counter_totals, consumer_offsets")
    finally:
        await conn.close()
    result = h.ConsumeRun(
        "ours",
        index,
        b.expected,
        done_at - child.spawned_at,
        child.since_spawn(child.first_line(lambda t: "assigned partitions" in t)),
        cpu_s,
        status,
        shutdown_s,
        checks,
        idle,
    )
    h.say(
        f"run {index} ours: {b.expected:,} records flushed in {result.wall_s:.2f} s, totals "
        f"{'correct' if checks['correct'] else 'WRONG'}; exit status {status} after SIGTERM"
    )
    return result


async def _check_totals(conn: asyncpg.Connection, group: str, b: Bench) -> dict[str, Any]:
    totals = await conn.fetchrow("SELECT coalesce(sum(value), 0) s, count(*) n FROM counter_totals")
    events = await conn.fetchrow("SELECT coalesce(sum(delta), 0) s, count(*) n FROM counter_events")
    assert totals is not None
    assert events is not None
    checks: dict[str, Any] = {
        "totals_sum": int(totals["s"]),
        "totals_keys": totals["n"],
        "events_sum": int(events["s"]),
        "event_rows": events["n"],
        "offsets_sum": int(await conn.fetchval(_OFFSETS, group, b.private.topic)),
        "expected_sum": b.expected,
        "expected_keys": min(b.expected, b.args.keys),
    }
    checks["correct"] = (
        checks["totals_sum"] == checks["events_sum"] == checks["offsets_sum"] == b.expected
        and checks["totals_keys"] == checks["expected_keys"]
    )
    return checks


def _check_cell(run: h.ConsumeRun) -> str:
    if run.side == "bare":
        twice = run.checks["delivered_twice"]
        read = "all read" if run.checks["correct"] else "NOT ALL READ"
        return read + (f", {twice:,} handed twice" if twice else "")
    return "totals correct" if run.checks["correct"] else "TOTALS WRONG"


def report(session: h.Session, meta: dict[str, Any], rounds: h.Rounds[h.ConsumeRun]) -> int:
    runs, error = rounds.results, rounds.error
    if not all(h.by_side(runs, SIDES).values()):
        lines = [f"- run {r.index} {r.side}: {r.records_per_s:,.0f} records/s" for r in runs]
        return session.failed(meta, [r.as_dict() for r in runs], lines, error or "no runs")
    compared = h.compare_reads(runs, SIDES, base="bare")
    ratio = compared["ratios"]["ours"]
    correct = all(r.checks["correct"] for r in runs)
    summary: dict[str, Any] = {
        "median_records_per_s": compared["median_records_per_s"],
        "ratio": ratio,
        "floor": FLOOR.value,
        "verdict": h.verdict(FLOOR.passes(ratio) and correct, error),
        "error": error,
        "all_totals_correct": correct,
        "excluding_startup": {
            "median_records_per_s": compared["excluding_startup"]["median_records_per_s"],
            "ratio": compared["excluding_startup"]["ratios"]["ours"],
        },
        "median_startup_s": compared["median_startup_s"],
    }
    w, pg = meta["workload"], meta["postgres"]
    labels = {"bare": "bare (aiokafka getmany + orjson)", "ours": "ours (distcount aggregator)"}
    md = [
        session.heading(),
        "",
        f"Machine: {h.machine_line(session.machine)}; Kafka {meta['kafka_bootstrap']}, "
        f"PostgreSQL {pg['server_version']} (synchronous_commit {pg['synchronous_commit']}). "
        "The broker, PostgreSQL, the consumer under test and this script share these cores.",
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
        "to done. CPU = the child process's own user+system time. Busy before = the whole "
        "machine's CPU use in the second before the child was spawned.",
        "",
        *h.reads_tables(runs, compared, labels, _check_cell),
        "",
        f"**Headline: ours / bare = {ratio:.3f} (ratio of median records/s, spawn to done); "
        f"{FLOOR}: {summary['verdict']}**"
        + ("" if correct else " (a check failed in at least one run: see the table)"),
        *h.error_lines(error),
        "",
        "Peers: this script runs ours and the bare loop only; benchmarks/fold_peers.py sets "
        "faust-streaming and Quix Streams beside them.",
    ]
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("aggregator", "Aggregator benchmark")
    endpoints = h.Endpoints.load()
    h.say(
        f"aggregator benchmark: {args.records:,} records, {args.keys:,} keys, "
        f"{args.partitions} partitions, {args.repeat} runs per side; {endpoints.describe()}"
    )
    rounds: h.Rounds[h.ConsumeRun] = h.Rounds()
    async with h.private_stack(endpoints, "bench.agg", args.partitions) as private:
        # what ours will read: its consumer options are the bare loop's too
        ours = ours_settings("bench", args.flush_interval_ms)
        settings = load(private.env(ours))
        options = distcount_aggregator.consumer_options(settings)
        if options.get("security_protocol", "PLAINTEXT") != "PLAINTEXT":
            # the options go to the bare loop as JSON and into the report: no TLS context, and
            # no SASL password, belongs there
            raise SystemExit("the benchmarks read a plain-text Kafka: unset the Kafka security")
        max_records, source = args.max_records, "--max-records"
        if not max_records:
            max_records = distcount_aggregator.MAX_RECORDS_PER_FETCH
            source = "distcount_aggregator.MAX_RECORDS_PER_FETCH"
        h.say(f"consumer options (from consumer_options): {options}")
        h.say(f"getmany max_records for both sides: {max_records} (from {source})")
        encoded = [encode_record(Increment(f"k{i}", 1)) for i in range(args.keys)]
        fill = await h.prefill(
            endpoints.kafka_bootstrap,
            private.topic,
            partitions=args.partitions,
            records=args.records,
            encoded=encoded,
            spread_ms=args.spread_ms,
        )
        pg = await h.postgres_facts(private.database.owner_url)
        b = Bench(
            args=args,
            private=private,
            ends=fill["end_offsets"],
            options=options,
            max_records=max_records,
            log_dir=session.log_dir,
        )
        sides = {"bare": run_bare, "ours": run_ours}

        async def round_(index: int) -> AsyncIterator[h.ConsumeRun]:
            for side in h.side_order(SIDES, index):
                yield await sides[side](b, index)

        await rounds.play(args.repeat, round_)
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        postgres=pg,
        workload={
            "records": args.records,
            "keys": args.keys,
            "partitions": args.partitions,
            "spread_ms": args.spread_ms,
            "flush_interval_ms": args.flush_interval_ms,
            "bucket_ms": settings.bucket_ms,
            "max_records": max_records,
            "max_records_source": source,
            "repeat": args.repeat,
        },
        consumer_options=options,
        prefill=fill,
        logs=str(session.log_dir),
        peers="not run here: benchmarks/fold_peers.py runs faust-streaming and Quix Streams",
    )
    return report(session, meta, rounds)


def main() -> None:
    parser = h.parser(
        "distcount's aggregator against a bare aiokafka consume loop.",
        repeat=3,
        repeat_help="runs per side, interleaved",
    )
    h.add_prefill_options(parser, records=1_000_000, keys=10_000)
    parser.add_argument(
        "--max-records", type=int, default=0, help="the bare loop's getmany max_records"
    )
    args = parser.parse_args()
    h.at_least(parser, args, 1, "--records", "--keys", "--repeat", "--partitions")
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
