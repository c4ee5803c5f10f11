"""Fold and flush from a pre-filled topic: the aggregator against the bare limit and its peers,
faust-streaming and Quix Streams, on the same partitions and the same PostgreSQL, in one run.

A fresh topic of 6 partitions is pre-filled with N single-increment records whose keys are
drawn from a Zipf distribution over K keys (the codec's records, message key = counter key).
Then, in interleaved rounds (the order turns by one side each round), each side a child
process timed from its spawn to done:

- bare: benchmarks/bare_consumer.py (as in aggregator.py): aiokafka getmany + orjson, no state,
  no output: the limit of a Python consumer.
- ours: `distcount aggregator`, exactly once; done when its offsets in PostgreSQL add up to N.
- faust: benchmarks/peers/faust_app.py: an agent summing into a Table, a timer upserting the
  changed sums into PostgreSQL; at-least-once.
- quix-alos, quix-eos: benchmarks/peers/quix_app.py: a StreamingDataFrame with a stateful sum
  per key and Quix's PostgreSQLSink (upsert), processing_guarantee at-least-once and
  exactly-once.

Every run's totals are checked key by key against the sums of the pre-fill (ours in
counter_totals, each peer in its own table of the same database). Headline: ours / bare
(floor 0.75), ours / Quix Streams (floor 10), ours / faust-streaming (floor 50). The peers need
the `bench` dependency group: `uv sync --group bench`.

    .venv/bin/python benchmarks/fold_peers.py            # 1,000,000 records, 100,000 keys, 3 rounds
    .venv/bin/python benchmarks/fold_peers.py --quick    # 100,000 records, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

import aggregator
import distcount_aggregator
import harness as h
from distcount_codec import Increment, encode_record
from distcount_config import load

SIDES = ("bare", "ours", "faust", "quix-alos", "quix-eos")
PEERS = ("faust", "quix-alos", "quix-eos")
LABELS = {
    "bare": "bare (aiokafka getmany + orjson)",
    "ours": "ours (distcount aggregator)",
    "faust": "faust-streaming (agent + Table, timer flush)",
    "quix-alos": "Quix Streams, at-least-once",
    "quix-eos": "Quix Streams, exactly-once",
}
GUARANTEES = {
    "bare": "none: reads and discards (no state, no output)",
    "ours": (
        "exactly once: each partition's sums, buckets and next offset in one PostgreSQL transaction"
    ),
    "faust": (
        "at-least-once (faust's default): every Table update goes to the table's changelog "
        "topic and offsets are committed apart from it; after a crash the table is rebuilt "
        "from the whole changelog and the records after the last commit are read again "
        "(counted twice); PostgreSQL is written by a timer outside both"
    ),
    "quix-alos": (
        "at-least-once (Quix's default): at each checkpoint the sink writes, then the state's "
        "changelog is flushed and the offsets committed, not atomically; after a crash the "
        "records after the last commit are processed again (recovery skips changelog entries "
        "ahead of the committed offsets, best effort, and the sink upserts whole sums)"
    ),
    "quix-eos": (
        "exactly-once for the state and the offsets (one Kafka transaction per checkpoint); "
        "the PostgreSQL sink is outside it and writes first, but it upserts sums computed "
        "from the committed state, so a replay rewrites the same values"
    ),
}
FLOORS = {"bare": h.Limit(0.75, floor=True), "quix": h.Limit(10, floor=True)}
FLOORS["faust"] = h.Limit(50, floor=True)
PEER_PACKAGES = ("faust-streaming", "quixstreams", "mode-streaming", "confluent-kafka")
TABLE_DDL = "CREATE TABLE {table} (key text PRIMARY KEY, value numeric NOT NULL)"


@dataclass(frozen=True)
class Run:
    """What every side of one benchmark run shares."""

    bench: aggregator.Bench  # args, private topic and database, end offsets, bare's options
    expected: dict[str, int]  # counter key -> the sum of its records' values

    @property
    def records(self) -> int:
        return self.bench.expected

    @property
    def args(self) -> argparse.Namespace:
        return self.bench.args


def zipf_draws(records: int, keys: int, s: float, seed: int) -> list[int]:
    """`records` key ranks in [0, keys), rank r drawn with a weight of 1 / (r + 1) ** s."""
    cum = list(itertools.accumulate(1.0 / (rank + 1) ** s for rank in range(keys)))
    return random.Random(seed).choices(range(keys), cum_weights=cum, k=records)


def workload(args: argparse.Namespace) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    """Record i's (message key, value), and each key's expected sum. Rank r is key `k<r>`."""
    draws = zipf_draws(args.records, args.keys, args.zipf_s, args.seed)
    per_key = [encode_record(Increment(f"k{rank}", 1)) for rank in range(args.keys)]
    counts = Counter(draws)
    return [per_key[rank] for rank in draws], {f"k{r}": n for r, n in counts.items()}


def peer_table(side: str) -> str:
    return f"peer_{side.replace('-', '_')}_totals"


async def compare_totals(
    conn: asyncpg.Connection, table: str, expected: dict[str, int]
) -> dict[str, Any]:
    """Every key's value in `table` against the sum expected for it."""
    rows = await conn.fetch(f"SELECT key, value FROM {table}")
    got = {row["key"]: int(row["value"]) for row in rows}
    wrong = sorted(k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k))
    return {
        "table": table,
        "sum": sum(got.values()),
        "keys": len(got),
        "expected_sum": sum(expected.values()),
        "expected_keys": len(expected),
        "keys_wrong": len(wrong),
        "wrong_examples": {k: [got.get(k), expected.get(k)] for k in wrong[:5]},
        "totals_correct": not wrong,
    }


async def run_ours(r: Run, index: int) -> h.ConsumeRun:
    b = r.bench
    group = f"bench-ours-{h.suffix()}"
    env = b.private.env(aggregator.ours_settings(group, r.args.flush_interval_ms))
    conn = await asyncpg.connect(b.private.database.owner_url, timeout=10)
    try:
        idle = await h.background_busy(r.args.wait_quiet_s)
        h.say(f"run {index} ours: spawning `distcount aggregator` (group {group})")
        log = b.log_dir / f"run{index}-ours.log"
        child = await h.spawn_service("aggregator", env, log, h.relay("ours", r.records))
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
        checks = await compare_totals(conn, "counter_totals", r.expected)
        checks["events_sum"] = int(
            await conn.fetchval("SELECT coalesce(sum(delta), 0) FROM counter_events")
        )
        checks["offsets_sum"] = int(await conn.fetchval(h.STORED_OFFSETS, group, b.private.topic))
        checks["correct"] = (
            checks["totals_correct"] and checks["events_sum"] == checks["offsets_sum"] == r.records
        )
        await conn.execute("TRUNCATE counter_events, counter_totals, consumer_offsets")
    finally:
        await conn.close()
    result = h.ConsumeRun(
        "ours",
        index,
        r.records,
        done_at - child.spawned_at,
        child.since_spawn(child.first_line(lambda t: "assigned partitions" in t)),
        cpu_s,
        status,
        shutdown_s,
        checks,
        idle,
    )
    h.say(
        f"run {index} ours: {r.records:,} records flushed in {result.wall_s:.2f} s "
        f"({result.records_per_s:,.0f}/s), totals {_verdict_word(checks['correct'])}"
    )
    return result


def _peer_argv(r: Run, side: str, marker: str, work_dir: Path) -> list[str]:
    b, args = r.bench, r.args
    common = ["--bootstrap", b.private.endpoints.kafka_bootstrap, "--topic", b.private.topic]
    common += ["--end-offsets", json.dumps(b.ends), "--expected", str(r.records)]
    common += ["--table", peer_table(side)]
    interval_s = str(args.flush_interval_ms / 1000)
    if side == "faust":
        argv = [h.PYTHON, str(h.BENCH_DIR / "peers" / "faust_app.py"), "--app-id", marker]
        argv += ["--partitions", str(args.partitions), "--flush-interval-s", interval_s]
        return [*argv, *common, "--data-dir", str(work_dir)]
    argv = [h.PYTHON, str(h.BENCH_DIR / "peers" / "quix_app.py"), "--group", marker]
    argv += ["--commit-interval-s", interval_s, "--state-dir", str(work_dir)]
    guarantee = "exactly-once" if side == "quix-eos" else "at-least-once"
    argv += ["--processing-guarantee", guarantee, *(["--group-by"] if args.quix_group_by else [])]
    return [*argv, *common]


async def run_peer(r: Run, side: str, index: int) -> h.ConsumeRun:
    """A peer app, timed by the harness's reader protocol; then its table checked key by key,
    emptied, and the topics and local state it made removed."""
    b = r.bench
    marker = f"bench-{side}-{h.suffix()}"  # its group id, and in the name of every topic it makes
    work_dir = Path(tempfile.mkdtemp(prefix=f"{marker}-"))
    # the peers log in as the database's owner: Quix's sink runs CREATE SCHEMA IF NOT EXISTS
    env = h.child_env({"PEER_DATABASE_URL": b.private.database.owner_url})
    argv = _peer_argv(r, side, marker, work_dir)
    try:
        idle = await h.background_busy(r.args.wait_quiet_s)
        h.say(f"run {index} {side}: spawning {Path(argv[1]).name} (group {marker})")
        result = await h.run_reader(
            side,
            index,
            argv,
            env,
            expected=r.records,
            timeout_s=r.args.timeout_s,
            log_dir=b.log_dir,
            background_busy=idle,
        )
        conn = await asyncpg.connect(b.private.database.owner_url, timeout=10)
        try:
            totals = await compare_totals(conn, peer_table(side), r.expected)
            await conn.execute(f"TRUNCATE {peer_table(side)}")
        finally:
            await conn.close()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        await _delete_topics_of(b.private.endpoints.kafka_bootstrap, marker, b.private.topic)
    read_all = result.checks["correct"]
    result.checks.update(totals)
    result.checks["read_all"] = read_all
    result.checks["correct"] = read_all and totals["totals_correct"]
    h.say(
        f"run {index} {side}: {result.records_per_s:,.0f} records/s, totals "
        f"{_verdict_word(totals['totals_correct'])} ({totals['sum']:,} over {totals['keys']:,} "
        "keys)"
    )
    return result


async def _delete_topics_of(bootstrap: str, marker: str, keep: str) -> None:
    """The changelog, repartition and assignor topics a peer made (their names hold its group
    id); a failure is reported, not raised."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        await asyncio.wait_for(admin.start(), 30)
        names = [t for t in await admin.list_topics() if marker in t and t != keep]
        if names:
            await asyncio.wait_for(admin.delete_topics(names), 60)
            h.say(f"deleted the peer's topics {', '.join(sorted(names))}")
    except Exception as exc:
        h.say(f"could not delete the topics of {marker}: {type(exc).__name__}: {exc}")
    finally:
        await admin.close()


def _verdict_word(correct: bool) -> str:
    return "correct" if correct else "WRONG"


async def run_bare(r: Run, index: int) -> h.ConsumeRun:
    result = await aggregator.run_bare(r.bench, index)
    result.checks["read_all"] = result.checks["correct"]
    return result


def round_sides(sides: Sequence[str], index: int, faust_rounds: int) -> list[str]:
    """Round `index` (from 1): the sides turned by index - 1; faust only in its first rounds."""
    playing = [s for s in sides if s != "faust" or index <= faust_rounds]
    turn = (index - 1) % len(playing)
    return playing[turn:] + playing[:turn]


def check_cell(run: h.ConsumeRun) -> str:
    c = run.checks
    if run.side == "bare":
        twice = c["delivered_twice"]
        return ("all read" if c["correct"] else "NOT ALL READ") + (
            f", {twice:,} handed twice" if twice else ""
        )
    if c["totals_correct"]:
        cell = f"{c['keys']:,} keys exact"
    else:
        cell = f"TOTALS WRONG ({c['keys_wrong']:,} keys)"
    if run.side == "ours":
        return cell + ("" if c["correct"] else f"; events {c['events_sum']:,}")
    return cell + ("" if c["read_all"] else "; NOT ALL READ")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def headline(rps: dict[str, float]) -> dict[str, Any]:
    """ours / bare, ours / the faster Quix Streams side, ours / faust; each with its floor."""
    ours = rps.get("ours")
    quix = [s for s in ("quix-alos", "quix-eos") if rps.get(s)]
    fastest_quix = max(quix, key=lambda s: rps[s]) if quix else None
    against = {"bare": "bare", "quix": fastest_quix, "faust": "faust"}
    out: dict[str, Any] = {}
    for name, side in against.items():
        ratio = _ratio(ours, rps.get(side)) if side else None
        limit = FLOORS[name]
        out[name] = {
            "against": side,
            "ratio": ratio,
            "floor": limit.value,
            "met": None if ratio is None else limit.passes(ratio),
        }
    return out


def report(session: h.Session, meta: dict[str, Any], rounds: h.Rounds[h.ConsumeRun]) -> int:
    runs, error = rounds.results, rounds.error
    sides = [s for s in SIDES if s in meta["workload"]["sides"]]
    measured = [s for s in sides if any(r.side == s for r in runs)]
    if not {"bare", "ours"} <= set(measured):
        lines = [f"- run {r.index} {r.side}: {r.records_per_s:,.0f} records/s" for r in runs]
        return session.failed(meta, [r.as_dict() for r in runs], lines, error or "no runs")
    compared = h.compare_reads(runs, measured, base="bare")
    rps: dict[str, float] = compared["median_records_per_s"]
    heads = headline(rps)
    correct = all(r.checks["correct"] for r in runs)
    missing = [s for s in sides if s not in measured]
    judged = [v["met"] for v in heads.values() if v["against"] in sides]
    passed = correct and not missing and all(m is True for m in judged)
    summary: dict[str, Any] = {
        "median_records_per_s": rps,
        "ratios_to_bare": compared["ratios"],
        "headline": heads,
        "verdict": h.verdict(passed, error),
        "error": error,
        "all_checks_correct": correct,
        "sides_not_measured": missing,
        "excluding_startup": compared["excluding_startup"],
        "median_startup_s": compared["median_startup_s"],
        "guarantees": {s: GUARANTEES[s] for s in sides},
    }
    w, pg = meta["workload"], meta["postgres"]
    versions = session.machine.get("versions", {})
    labels = {s: LABELS[s] for s in measured}
    guarantee_rows = []
    for side in sides:
        figure = rps.get(side)
        ours_over = _ratio(rps.get("ours"), figure) if side != "ours" else None
        target = {"bare": "bare", "faust": "faust"}.get(side, "quix" if "quix" in side else "")
        floor = f"≥ {FLOORS[target].value:g}" if target else ""
        if target == "quix" and heads["quix"]["against"] != side:
            floor += " (held against the faster Quix side)"
        guarantee_rows.append(
            [
                LABELS[side],
                "not measured" if figure is None else f"{figure:,.0f}",
                h.fmt(ours_over, 3) if ours_over else "",
                floor,
                GUARANTEES[side],
            ]
        )
    head_lines = []
    for name, v in heads.items():
        if v["against"] not in sides:
            continue
        shown = "not measured" if v["ratio"] is None else f"{v['ratio']:.3f}"
        met = {True: "met", False: "NOT met", None: "-"}[v["met"]]
        head_lines.append(f"ours / {v['against'] or name} = {shown} (floor {v['floor']:g}: {met})")
    load = session.machine["loadavg_at_start"]
    md = [
        session.heading(),
        "",
        f"Machine: {h.machine_line(session.machine)}; load average at start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; Kafka {meta['kafka_bootstrap']}, "
        f"PostgreSQL {pg['server_version']} (synchronous_commit {pg['synchronous_commit']}). "
        "The broker, PostgreSQL, the side under test and this script share these cores. "
        "Peers: "
        + ", ".join(f"{name} {versions.get(name) or 'not installed'}" for name in PEER_PACKAGES)
        + ".",
        "",
        f"Workload: {w['records']:,} single-increment records, keys drawn from a Zipf "
        f"distribution (s = {w['zipf_s']:g}, seed {w['seed']}) over {w['keys']:,} keys "
        f"({w['distinct_keys']:,} drawn at least once; the hottest holds "
        f"{w['hottest_key_share']:.1%} of the records), in a fresh topic of "
        f"{w['partitions']} partitions (records per partition: "
        f"{', '.join(f'{n:,}' for n in w['records_per_partition'])}), timestamps spread over "
        f"{w['spread_ms']} ms. Flush interval {w['flush_interval_ms']} ms for every side that "
        "flushes (ours: DISTCOUNT_FLUSH_INTERVAL_MS; faust: its timer; Quix: commit_interval). "
        f"{w['repeat']} round(s), the order turning by one side each round; faust-streaming in "
        f"the first {w['faust_rounds']} round(s) only. Quix Streams "
        + ("with" if w["quix_group_by"] else "without")
        + ' `.group_by("key")` (the message key is already the counter key).',
        "",
        "Every side is a child process timed from spawn to done: bare = its position in every "
        "partition reached the end offsets; ours = PostgreSQL's consumer_offsets for its group "
        "add up to them; a peer = its position reached them and its last sink write (committed) "
        "made the sums in its table add up to the records. Then each table is compared key by "
        "key with the sums of the pre-fill (ours: counter_totals, and the events and offsets "
        "must add up to the records; a peer: a table of its own in the same database). "
        "Start-up = spawn to first partition assignment.",
        "",
        *h.reads_tables(runs, compared, labels, check_cell),
        "",
        h.table(
            ["side", "median records/s", "ours / side", "target", "delivery guarantee"],
            guarantee_rows,
        ),
        "",
        f"**Headline: {'; '.join(head_lines)}. Checks: "
        + ("every run's totals exact" if correct else "A CHECK FAILED (see the table)")
        + (f"; not measured: {', '.join(missing)}" if missing else "")
        + f". Verdict: {summary['verdict']}**",
        *h.error_lines(error),
    ]
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("fold_peers", "Fold and flush: ours, bare and peers", PEER_PACKAGES)
    endpoints = h.Endpoints.load()
    missing = [name for name in ("faust", "quixstreams") if find_spec(name) is None]
    if missing and any(s in PEERS for s in args.sides):
        raise SystemExit(
            f"{' and '.join(missing)} not installed: `uv sync --group bench` installs the peers"
        )
    h.say(
        f"fold_peers: {args.records:,} records, Zipf over {args.keys:,} keys, "
        f"{args.partitions} partitions, {args.repeat} rounds, sides {', '.join(args.sides)}; "
        f"{endpoints.describe()}"
    )
    encoded, expected = workload(args)
    rounds: h.Rounds[h.ConsumeRun] = h.Rounds()
    async with h.private_stack(endpoints, "bench.peers", args.partitions) as private:
        settings = load(private.env(aggregator.ours_settings("bench", args.flush_interval_ms)))
        options = distcount_aggregator.consumer_options(settings)
        max_records = args.max_records or distcount_aggregator.MAX_RECORDS_PER_FETCH
        fill = await h.prefill(
            endpoints.kafka_bootstrap,
            private.topic,
            partitions=args.partitions,
            records=args.records,
            encoded=encoded,
            spread_ms=args.spread_ms,
        )
        del encoded
        pg = await h.postgres_facts(private.database.owner_url)
        conn = await asyncpg.connect(private.database.owner_url, timeout=10)
        try:
            for side in PEERS:
                await conn.execute(TABLE_DDL.format(table=peer_table(side)))
        finally:
            await conn.close()
        run = Run(
            aggregator.Bench(
                args=args,
                private=private,
                ends=fill["end_offsets"],
                options=options,
                max_records=max_records,
                log_dir=session.log_dir,
            ),
            expected,
        )

        def side_runner(side: str) -> Callable[[Run, int], Awaitable[h.ConsumeRun]]:
            if side == "bare":
                return run_bare
            if side == "ours":
                return run_ours
            return lambda r, index: run_peer(r, side, index)

        async def round_(index: int) -> AsyncIterator[h.ConsumeRun]:
            for side in round_sides(args.sides, index, args.faust_rounds):
                yield await side_runner(side)(run, index)

        await rounds.play(args.repeat, round_)
    hottest = max(expected.values())
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        postgres=pg,
        workload={
            "records": args.records,
            "keys": args.keys,
            "zipf_s": args.zipf_s,
            "seed": args.seed,
            "distinct_keys": len(expected),
            "hottest_key_share": hottest / args.records,
            "partitions": args.partitions,
            "records_per_partition": [fill["end_offsets"][p] for p in sorted(fill["end_offsets"])],
            "spread_ms": args.spread_ms,
            "flush_interval_ms": args.flush_interval_ms,
            "bucket_ms": settings.bucket_ms,
            "max_records": max_records,
            "repeat": args.repeat,
            "faust_rounds": args.faust_rounds,
            "quix_group_by": args.quix_group_by,
            "sides": list(args.sides),
            "timeout_s": args.timeout_s,
        },
        consumer_options=options,
        prefill=fill,
        logs=str(session.log_dir),
    )
    return report(session, meta, rounds)


def main() -> None:
    parser = h.parser(
        "Fold and flush: distcount's aggregator against a bare consume loop, faust-streaming "
        "and Quix Streams.",
        repeat=3,
        repeat_help="rounds (every side once a round, faust only in the first --faust-rounds)",
    )
    add = parser.add_argument
    add("--records", type=int, default=None, help="records to pre-fill (1,000,000)")
    add("--keys", type=int, default=100_000, help="keys the Zipf distribution draws from")
    add("--zipf-s", type=float, default=1.0, help="the Zipf exponent: rank r weighs 1/r^s")
    add("--seed", type=int, default=1, help="seed of the key draws")
    add("--partitions", type=int, default=6, help="partitions of the topic")
    add("--flush-interval-ms", type=int, default=1000, help="every side's flush interval")
    add("--spread-ms", type=int, default=5000, help="record timestamps spread over this many ms")
    add("--timeout-s", type=float, default=1200.0, help="give up on one run after this long")
    add("--max-records", type=int, default=0, help="the bare loop's getmany max_records")
    add("--faust-rounds", type=int, default=1, help="rounds faust-streaming plays in (it is slow)")
    add("--quix-group-by", action="store_true", help='Quix: .group_by("key") (a repartition)')
    add("--sides", default=",".join(SIDES), help=f"a comma-separated subset of {','.join(SIDES)}")
    add("--quick", action="store_true", help="a quick look: 100,000 records, 1 round")
    parser.set_defaults(repeat=None)  # 3, or 1 with --quick
    args = parser.parse_args()
    if args.records is None:
        args.records = 100_000 if args.quick else 1_000_000
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if args.faust_rounds == 0 and "faust" in args.sides:
        args.sides.remove("faust")
    unknown = [s for s in args.sides if s not in SIDES]
    if unknown or not {"bare", "ours"} <= set(args.sides):
        parser.error(f"--sides: bare and ours, and any of {', '.join(PEERS)} ({unknown})")
    h.at_least(parser, args, 1, "--records", "--keys", "--repeat", "--partitions")
    h.at_least(parser, args, 0, "--faust-rounds")
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
