"""What idempotency ids cost: the aggregator on the same load with and without ids, in one run,
and the memory each remembered id takes.

Two fresh topics are pre-filled with the same N single-increment records over K keys (record i
carries key `k{i mod K}`, value 1, the same timestamps); in the second every record also carries
an id of its own (a UUID, as a client's `Idempotency-Key` would be). Then R times, interleaved,
each side a `distcount aggregator` timed from its spawn until PostgreSQL holds every partition's
offset at the topic's end, as benchmarks/aggregator.py times it; after each run the totals, the
event log and the offsets must each add up to N, and on the ids side `counter_ids` must hold N
ids. Headline: median records/s with ids / median records/s without.

Memory per remembered id:
- PostgreSQL: `counter_ids`' heap and index size after a run with ids, divided by its rows.
- the aggregator, until the flush: the bytes a partition's state grows by per record with an id
  (tracemalloc, in this process, folding the same records through `distcount_aggregator.fold`),
  beside the bytes per (bucket, key) entry of records without one.

    .venv/bin/python benchmarks/idempotency.py [--records 300000] [--keys 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

import harness as h
from aggregator import ours_settings
from distcount_aggregator import PartitionState, fold
from distcount_codec import Increment, RecordDecoder, encode_record

SIDES = ("no ids", "ids")
# what the ids cost at most, as the share of the throughput without them that is kept
FLOOR = h.Limit(0.5, floor=True)
_OFFSETS = h.STORED_OFFSETS


@dataclass(frozen=True)
class Side:
    name: str
    private: h.Private
    ends: dict[int, int]

    @property
    def expected(self) -> int:
        return sum(self.ends.values())


def encoded(records: int, keys: int, *, ids: bool) -> list[tuple[bytes, bytes]]:
    if not ids:
        return [encode_record(Increment(f"k{i}", 1)) for i in range(min(records, keys))]
    ident = uuid.UUID(int=12345).int
    return [
        encode_record(Increment(f"k{i % keys}", 1), str(uuid.UUID(int=(ident + i) % 2**128)))
        for i in range(records)
    ]


async def run_side(side: Side, index: int, args: argparse.Namespace, log_dir: Path) -> h.ConsumeRun:
    group = f"bench-ids-{h.suffix()}"
    env = side.private.env(ours_settings(group, args.flush_interval_ms))
    conn = await asyncpg.connect(side.private.database.owner_url, timeout=10)
    try:
        idle = await h.background_busy(args.wait_quiet_s)
        h.say(f"run {index} {side.name}: spawning `distcount aggregator` (group {group})")
        log = log_dir / f"run{index}-{side.name.replace(' ', '-')}.log"
        child = await h.spawn_service("aggregator", env, log, h.relay(side.name, side.expected))
        try:
            done_at, cpu_s = await h.wait_until_flushed(
                conn,
                child,
                label=side.name,
                group=group,
                topic=side.private.topic,
                expected=side.expected,
                timeout_s=args.timeout_s,
            )
        finally:
            status, shutdown_s = await child.stop()
        checks = await _check(conn, group, side, args.keys)
        await conn.execute("TRUNCATE counter_events, counter_totals, consumer_offsets, counter_ids")
    finally:
        await conn.close()
    run = h.ConsumeRun(
        side.name,
        index,
        side.expected,
        done_at - child.spawned_at,
        child.since_spawn(child.first_line(lambda t: "assigned partitions" in t)),
        cpu_s,
        status,
        shutdown_s,
        checks,
        idle,
    )
    h.say(
        f"run {index} {side.name}: {side.expected:,} records flushed in {run.wall_s:.2f} s, "
        f"totals {'correct' if checks['correct'] else 'WRONG'}"
    )
    return run


async def _check(conn: asyncpg.Connection, group: str, side: Side, keys: int) -> dict[str, Any]:
    totals = await conn.fetchrow("SELECT coalesce(sum(value), 0) s, count(*) n FROM counter_totals")
    events = await conn.fetchval("SELECT coalesce(sum(delta), 0) FROM counter_events")
    assert totals is not None
    checks: dict[str, Any] = {
        "totals_sum": int(totals["s"]),
        "totals_keys": totals["n"],
        "events_sum": int(events),
        "offsets_sum": int(await conn.fetchval(_OFFSETS, group, side.private.topic)),
        "expected_sum": side.expected,
        "ids": await conn.fetchval("SELECT count(*) FROM counter_ids"),
    }
    want_ids = side.expected if side.name == "ids" else 0
    checks["correct"] = (
        checks["totals_sum"] == checks["events_sum"] == checks["offsets_sum"] == side.expected
        and checks["totals_keys"] == min(side.expected, keys)
        and checks["ids"] == want_ids
    )
    if side.name == "ids":
        sizes = await conn.fetchrow(
            "SELECT pg_relation_size('counter_ids') heap, pg_indexes_size('counter_ids') idx"
        )
        assert sizes is not None
        checks["postgres_heap_bytes"] = sizes["heap"]
        checks["postgres_index_bytes"] = sizes["idx"]
    return checks


@dataclass(frozen=True)
class _Record:
    offset: int
    timestamp: int
    value: bytes


def fold_memory(records: int, keys: int) -> dict[str, float]:
    """Bytes a partition's state grows by per record folded: with an id (each kept apart), and
    without one over `records` distinct keys (each a (bucket, key) entry)."""
    now_ms = int(time.time() * 1000)
    out: dict[str, float] = {}
    for name, values in (
        ("id", [v for _, v in encoded(records, keys, ids=True)]),
        ("entry", [encode_record(Increment(f"key-{i:08d}", 1))[1] for i in range(records)]),
    ):
        batch = [_Record(i, now_ms, value) for i, value in enumerate(values)]
        decoder = RecordDecoder(max_known=0)  # no memory of values: only the state is measured
        state = PartitionState(0, stored_offset=None)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        fold(state, batch, 1000, decoder)
        decoder.known.clear()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert state.entries == records, (name, state.entries)
        out[name] = grown / records
    return out


def report(
    session: h.Session, meta: dict[str, Any], rounds: h.Rounds[h.ConsumeRun], memory: dict[str, Any]
) -> int:
    runs, error = rounds.results, rounds.error
    if not all(h.by_side(runs, SIDES).values()):
        lines = [f"- run {r.index} {r.side}: {r.records_per_s:,.0f} records/s" for r in runs]
        return session.failed(meta, [r.as_dict() for r in runs], lines, error or "no runs")
    compared = h.compare_reads(runs, SIDES, base="no ids")
    ratio = compared["ratios"]["ids"]
    correct = all(r.checks["correct"] for r in runs)
    keyed = [r for r in runs if r.side == "ids"]
    pg_bytes = median_of(
        [
            (r.checks["postgres_heap_bytes"] + r.checks["postgres_index_bytes"]) / r.records
            for r in keyed
        ]
    )
    summary: dict[str, Any] = {
        "median_records_per_s": compared["median_records_per_s"],
        "ratio": ratio,
        "floor": FLOOR.value,
        "verdict": h.verdict(FLOOR.passes(ratio) and correct, error),
        "error": error,
        "all_totals_correct": correct,
        "postgres_bytes_per_id": pg_bytes,
        "aggregator_bytes_per_pending_id": memory["id"],
        "aggregator_bytes_per_entry_without_id": memory["entry"],
    }
    w = meta["workload"]
    labels = {"no ids": "records without ids", "ids": "records with ids (one each)"}
    md = [
        session.heading(),
        "",
        f"Machine: {h.machine_line(session.machine)}. The broker, PostgreSQL, the aggregator "
        "and this script share these cores.",
        "",
        f"Workload: two topics of {w['partitions']} partitions, each {w['records']:,} "
        f"single-increment records over {w['keys']:,} keys (value 1), the second with an id "
        f"(a UUID) on every record; flush interval {w['flush_interval_ms']} ms; {w['repeat']} "
        "runs per side, interleaved; each side a fresh `distcount aggregator` timed from spawn "
        "until PostgreSQL holds every offset.",
        "",
        *h.reads_tables(runs, compared, labels, _check_cell),
        "",
        f"**Headline: with ids / without = {ratio:.3f} (median records/s, spawn to done); "
        f"{FLOOR}: {summary['verdict']}**",
        *h.error_lines(error),
        "",
        "Memory per remembered id:",
        "",
        f"- PostgreSQL, `counter_ids` heap and indexes after a run: {pg_bytes:,.0f} bytes an id "
        "(a 16-byte digest, an 8-byte fingerprint, a timestamp, the row's header, and its "
        "B-tree entry; the BRIN index on the time takes a few pages), for as long as the "
        "window keeps it.",
        f"- the aggregator, until the flush: {memory['id']:,.0f} bytes per record with an id "
        f"(a record without one costs {memory['entry']:,.0f} bytes per new (bucket, key) entry, "
        "nothing for a key already there).",
    ]
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    return session.finish(data, "\n".join(md))


def median_of(values: list[float]) -> float:
    return h.median(values) if values else float("nan")


def _check_cell(run: h.ConsumeRun) -> str:
    return "totals correct" if run.checks["correct"] else "TOTALS WRONG"


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("idempotency", "Idempotency ids: cost and memory")
    endpoints = h.Endpoints.load()
    h.say(
        f"idempotency benchmark: {args.records:,} records, {args.keys:,} keys, "
        f"{args.repeat} runs per side; {endpoints.describe()}"
    )
    memory = fold_memory(args.memory_records, args.keys)
    h.say(f"fold memory per record: {memory}")
    rounds: h.Rounds[h.ConsumeRun] = h.Rounds()
    async with (
        h.private_stack(endpoints, "bench.plain", args.partitions) as plain,
        h.private_stack(endpoints, "bench.keyed", args.partitions) as keyed,
    ):
        sides = {}
        for name, private, ids in (("no ids", plain, False), ("ids", keyed, True)):
            fill = await h.prefill(
                endpoints.kafka_bootstrap,
                private.topic,
                partitions=args.partitions,
                records=args.records,
                encoded=encoded(args.records, args.keys, ids=ids),
                spread_ms=args.spread_ms,
            )
            sides[name] = Side(name, private, fill["end_offsets"])

        async def round_(index: int) -> AsyncIterator[h.ConsumeRun]:
            for name in h.side_order(SIDES, index):
                yield await run_side(sides[name], index, args, session.log_dir)

        await rounds.play(args.repeat, round_)
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        workload={
            "records": args.records,
            "keys": args.keys,
            "partitions": args.partitions,
            "spread_ms": args.spread_ms,
            "flush_interval_ms": args.flush_interval_ms,
            "repeat": args.repeat,
            "memory_records": args.memory_records,
        },
        memory=memory,
    )
    return report(session, meta, rounds, memory)


def main() -> None:
    parser = h.parser(
        "The aggregator with and without idempotency ids, and memory per id.",
        repeat=3,
        repeat_help="runs per side, interleaved",
    )
    h.add_prefill_options(parser, records=300_000, keys=10_000)
    parser.add_argument(
        "--memory-records", type=int, default=100_000, help="records folded for the memory"
    )
    args = parser.parse_args()
    h.at_least(parser, args, 1, "--records", "--keys", "--repeat", "--partitions")
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
