"""The read side under open-loop load: latencies at a fixed rate, against a bare endpoint loaded
the same way in the same run.

A private database is filled as the schema's owner: counter_totals with 1,000,000 keys
(`k<n>` holds n + 1, by COPY) and consumer_offsets rows for every partition of the private topic
(so every answer carries an as_of); then a month of minute rows for a few history keys
(`h<j>`), rolled up by `distcount_store.compaction` with the tiers 1h@1d,1d@30d and vacuumed.
Then R rounds, interleaved (the order alternates), each server started afresh:

- bare: benchmarks/bare_app.py's `GET /health/ready` (a constant JSON answer, same uvicorn
  settings as the ingress), at the counter read's rate.
- ours: `distcount ingress` on the private database, as the services' role, loaded in turn by
  (1) `GET /counters/k<random>` over raw HTTP; (2) the client's `get_counter_value` (async
  client, httpx) at the same rate, and again at a lower rate (`--client-low-rate`, 200/s); and
  (3) `GET /counters/h<random>/history` over 30 days at a 1 h step, at `--history-rate` (100/s:
  an answer of 720 points costs the server some 3 ms of CPU); every history key's answer is
  checked point by point against the sums filled, once a round, before the load.

All loads are open loop (`harness/_openloop.py`): requests on a fixed timetable, each timed
from the moment the timetable gave it, by child processes of their own (the client's load by
`--client-processes` of them, 2: httpx costs about 1 ms of CPU a call on a slow core, more
than one process has at 1,000 calls/s). Every answer of (1) and (2) must hold its key's value
and an as_of.

Last, once: read-your-writes, with `distcount aggregator` running on the private topic at its
flush interval: `incr` then `get_counter_value(after=token)` through the client, each operation
on a key of its own, open loop; every answer must be complete and hold exactly the write, and
the totals must add up to what was accepted.

Limits: median p99 of (1) <= 5 ms; median p99 of (3) <= 20 ms. PASS needs both, no wrong
answer anywhere, no failed request but the client's, and exact read-your-writes: a client that
cannot keep up with its rate is a figure (reported as "did not keep up"), not a fault of the
read side. Reported beside them: ours / bare (p50 and p99), the client's cost over raw HTTP,
read-your-writes p50 / the flush interval.

    .venv/bin/python benchmarks/reads.py [--rate 1000] [--duration 10] [--repeat 3]
    .venv/bin/python benchmarks/reads.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

import harness as h
from distcount_config import Settings
from distcount_config import load as load_settings
from distcount_store import Merged, compaction

COUNTER_P99 = h.Limit(5.0, floor=False, unit=" ms")
HISTORY_P99 = h.Limit(20.0, floor=False, unit=" ms")
ROLLUP = "1h@1d,1d@30d"
SIDES = ("bare", "ours")
LOADS = ("bare", "counter", "client", "client-low", "history")  # the runs' sides, as reported
CLIENT_SIDES = ("client", "client-low")
# calls in flight per client driver: past them, a call due is not sent (the client cannot keep up)
CLIENT_IN_FLIGHT = 64
MINUTE = timedelta(minutes=1)
HOUR_MS = 3_600_000
HISTORY_DAYS = 30  # the range each history request asks for
QUICK = {
    "keys": 100_000,
    "duration": 3.0,
    "warmup": 1.0,
    "repeat": 1,
    "history_keys": 5,
    "ryw_duration": 12.0,
}
_OFFSETS = "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1"


@dataclass
class Fill:
    """What the private database was filled with, and how the history was rolled up."""

    group: str  # the consumer group whose offsets the read ingress reports as_of from
    facts: dict[str, Any] = field(default_factory=dict)
    hourly: dict[tuple[int, int], int] = field(default_factory=dict)  # (key index, hour ms) -> sum


def history_delta(key: int, minute: int) -> int:
    """The delta of history key `key` in the `minute`-th minute of the month filled."""
    return 1 + (minute * 7 + key * 13) % 10 + (minute // 60) % 5


async def fill_totals(conn: asyncpg.Connection, args: argparse.Namespace, fill: Fill) -> None:
    started = time.monotonic()
    await conn.copy_records_to_table(
        "counter_totals",
        records=((f"k{n}", n + 1) for n in range(args.keys)),
        columns=["key", "value"],
    )
    seconds = time.monotonic() - started
    h.say(f"counter_totals: {args.keys:,} keys by COPY in {seconds:.1f} s")
    await conn.execute("VACUUM ANALYZE counter_totals")
    fill.facts["totals"] = {
        "keys": args.keys,
        "copy_s": seconds,
        "bytes": await conn.fetchval("SELECT pg_total_relation_size('counter_totals')"),
    }


async def fill_offsets(conn: asyncpg.Connection, group: str, topic: str, partitions: int) -> None:
    """A stored offset (0: nothing to count yet) and an as_of for every partition."""
    await conn.execute(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, as_of) "
        "SELECT $1, $2, p, 0, now() FROM generate_series(0, $3 - 1) AS p",
        group,
        topic,
        partitions,
    )


async def fill_history(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings, fill: Fill
) -> None:
    """A month of minute rows for each history key, as flushes leave them (width 0), and their
    totals; then rolled up as `distcount compact` does, and vacuumed (as autovacuum would)."""
    now: datetime = await conn.fetchval("SELECT statement_timestamp()")
    end = now.replace(second=0, microsecond=0)
    minutes = args.history_days * 1440
    start = end - minutes * MINUTE
    keys = args.history_keys

    def rows() -> Iterator[tuple[str, datetime, int, int]]:
        for i in range(minutes):
            at = start + i * MINUTE
            for k in range(keys):
                yield f"h{k}", at, history_delta(k, i), 0

    started = time.monotonic()
    await conn.copy_records_to_table(
        "counter_events", records=rows(), columns=["key", "bucket_start", "delta", "width_ms"]
    )
    copy_s = time.monotonic() - started
    totals = [sum(history_delta(k, i) for i in range(minutes)) for k in range(keys)]
    await conn.copy_records_to_table(
        "counter_totals",
        records=((f"h{k}", total) for k, total in enumerate(totals)),
        columns=["key", "value"],
    )
    start_ms = int(start.timestamp() * 1000)
    for k in range(keys):
        for i in range(minutes):
            hour = (start_ms + i * 60_000) // HOUR_MS * HOUR_MS
            fill.hourly[(k, hour)] = fill.hourly.get((k, hour), 0) + history_delta(k, i)
    h.say(
        f"counter_events: {keys * minutes:,} minute rows ({keys} keys x {args.history_days} "
        f"days) by COPY in {copy_s:.1f} s; rolling up with {ROLLUP}"
    )
    started = time.monotonic()
    rows_in = rows_out = 0
    async for event in compaction(conn, settings.rollup):
        if isinstance(event, Merged):
            rows_in += event.rows_in
            rows_out += event.rows_out
    compact_s = time.monotonic() - started
    await conn.execute("VACUUM ANALYZE counter_events")
    layout = await conn.fetch(
        "SELECT width_ms, count(*) AS n FROM counter_events GROUP BY 1 ORDER BY 1"
    )
    h.say(
        f"rolled up: {rows_in:,} rows merged into {rows_out:,} in {compact_s:.1f} s; rows per "
        "width: " + ", ".join(f"{r['width_ms']} ms: {r['n']:,}" for r in layout)
    )
    fill.facts["history"] = {
        "keys": keys,
        "days": args.history_days,
        "minute_rows": keys * minutes,
        "copy_s": copy_s,
        "fill_end": end.isoformat(),
        "compaction": {"tiers": ROLLUP, "rows_in": rows_in, "rows_out": rows_out, "s": compact_s},
        "rows_per_width_ms": {r["width_ms"]: r["n"] for r in layout},
        "bytes": await conn.fetchval("SELECT pg_total_relation_size('counter_events')"),
    }


def history_range() -> tuple[int, int]:
    """(from, to) in epoch ms: 30 days of whole hours, starting two hours after the hour 30
    days ago. A range reaching past 30 days ago would be refused at a 1 h step (data that old
    is kept per day): the margin keeps every request of a round inside the hourly tier."""
    now_ms = time.time_ns() // 1_000_000
    start = now_ms // HOUR_MS * HOUR_MS + 2 * HOUR_MS - HISTORY_DAYS * 24 * HOUR_MS
    return start, start + HISTORY_DAYS * 24 * HOUR_MS


def history_path(start_ms: int, end_ms: int) -> str:
    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return f"/counters/h{{n}}/history?from={iso(start_ms)}&to={iso(end_ms)}&step=1h"


async def check_history(
    base: str, path: str, fill: Fill, start_ms: int, keys: int
) -> dict[str, Any]:
    """Every history key's answer, point by point, against the sums filled."""
    wrong: list[str] = []
    points = 0
    async with httpx.AsyncClient(timeout=30) as client:
        for k in range(keys):
            response = await client.get(base + path.replace("{n}", str(k)))
            if response.status_code != 200:
                wrong.append(f"h{k}: {response.status_code} {response.text[:200]}")
                continue
            answer = response.json()["data"]["points"]
            points = len(answer)
            for i, point in enumerate(answer):
                expected = fill.hourly.get((k, start_ms + i * HOUR_MS), 0)
                if point["value"] != expected:
                    wrong.append(
                        f"h{k} point {i} ({point['start']}): {point['value']} != {expected}"
                    )
                    break
            if points != HISTORY_DAYS * 24:
                wrong.append(f"h{k}: {points} points, not {HISTORY_DAYS * 24}")
    return {"keys": keys, "points": points, "correct": not wrong, "wrong": wrong[:5]}


def ingress_settings(port: int, group: str, more: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "DISTCOUNT_HTTP_HOST": "127.0.0.1",
        "DISTCOUNT_HTTP_PORT": str(port),
        "DISTCOUNT_GROUP_ID": group,
        "DISTCOUNT_ROLLUP": ROLLUP,
        **(more or {}),
    }


@dataclass(frozen=True)
class Bench:
    args: argparse.Namespace
    private: h.Private
    fill: Fill
    log_dir: Path

    def load(
        self,
        label: str,
        target: str,
        *,
        keys: int = 1,
        check: str = "status",
        mode: str = "http",
        rate: float | None = None,
        processes: int = 1,
        max_in_flight: int = 512,
    ) -> h.OpenLoop:
        """A load at the counter reads' rate (or `rate`), duration and warm-up."""
        a = self.args
        rate = a.rate if rate is None else rate
        return h.OpenLoop(
            label,
            mode,
            rate,
            a.duration,
            a.warmup,
            target,
            keys=keys,
            check=check,
            processes=processes,
            max_in_flight=max_in_flight,
        )


async def round_of(b: Bench, index: int) -> AsyncIterator[h.OpenLoopRun]:
    a = b.args
    log = b.log_dir

    async def bare(port: int) -> h.Child:
        argv = [h.PYTHON, str(h.BENCH_DIR / "bare_app.py"), "--port", str(port)]
        return await h.Child.spawn("bare app", argv, h.child_env({}), log / f"run{index}-bare.log")

    async def ingress(port: int) -> h.Child:
        env = b.private.env(ingress_settings(port, b.fill.group))
        return await h.spawn_service("ingress", env, log / f"run{index}-ours.log")

    for side in h.side_order(SIDES, index, alternate=True):
        spawn = bare if side == "bare" else ingress
        async with h.served(
            side, index, spawn, ready_timeout_s=a.ready_timeout_s, wait_quiet_s=a.wait_quiet_s
        ) as (child, base, idle):
            if side == "bare":
                constant = b.load("GET /health/ready (bare)", "/health/ready")
                run = await h.drive("bare", index, constant, base, log, server=child)
                run.background_busy = idle
                yield run
                continue
            counter = b.load("GET /counters/{key}", "/counters/k{n}", keys=a.keys, check="counter")
            loads = [("counter", counter)]
            for name, rate in (("client", a.rate), ("client-low", a.client_low_rate)):
                if rate:
                    client = b.load(
                        f"client get_counter_value ({a.client_processes} drivers)",
                        "k{n}",
                        keys=a.keys,
                        check="counter",
                        mode="client",
                        rate=rate,
                        processes=a.client_processes,
                        max_in_flight=CLIENT_IN_FLIGHT,
                    )
                    loads.append((name, client))
            for name, reads in loads:
                run = await h.drive(name, index, reads, base, log, server=child)
                run.background_busy = idle
                yield run
            start_ms, end_ms = history_range()
            path = history_path(start_ms, end_ms)
            checked = await check_history(base, path, b.fill, start_ms, a.history_keys)
            h.say(
                f"run {index} history: {checked['keys']} keys answered {checked['points']} "
                f"points each, {'all correct' if checked['correct'] else 'WRONG'}"
            )
            label = "GET /counters/{key}/history (30 d, 1 h)"
            history = b.load(label, path, keys=a.history_keys, rate=a.history_rate)
            run = await h.drive("history", index, history, base, log, server=child)
            run.background_busy = idle
            run.extra["history_check"] = checked
            yield run


async def read_your_writes(b: Bench) -> h.OpenLoopRun:
    """The aggregator on the private topic, an ingress reading its group's offsets, and the
    read-your-writes load between them; then the totals against what was accepted."""
    a, private, log = b.args, b.private, b.log_dir
    group = f"bench-reads-ryw-{h.suffix()}"
    more = {"DISTCOUNT_LOG_LEVEL": "info"}
    if a.flush_interval_ms:
        more["DISTCOUNT_FLUSH_INTERVAL_MS"] = str(a.flush_interval_ms)
    flush_ms = load_settings(private.env({**more, "DISTCOUNT_GROUP_ID": group})).flush_interval_ms
    idle = await h.background_busy(a.wait_quiet_s)
    h.say(f"read-your-writes: starting `distcount aggregator` (group {group}, flush {flush_ms} ms)")
    aggregator = await h.spawn_service(
        "aggregator", private.env({**more, "DISTCOUNT_GROUP_ID": group}), log / "ryw-aggregator.log"
    )
    prefix = f"ryw.{h.suffix()}."
    try:
        await aggregator.wait_for_line(lambda t: "assigned partitions" in t, a.ready_timeout_s)

        async def ingress(port: int) -> h.Child:
            env = private.env(ingress_settings(port, group, more))
            return await h.spawn_service("ingress", env, log / "ryw-ingress.log")

        async with h.served(
            "ryw", 1, ingress, ready_timeout_s=a.ready_timeout_s, wait_quiet_s=0
        ) as (child, base, _):
            writes = h.OpenLoop(
                "incr, then get_counter_value(after=token)",
                "ryw",
                a.ryw_rate,
                a.ryw_duration,
                min(a.warmup, 2.0),
                prefix,
                timeout_s=30.0,
            )
            run = await h.drive("ryw", 1, writes, base, log, server=child)
        run.background_busy = idle
        run.extra.update(flush_interval_ms=flush_ms, group=group)
        run.extra["totals_check"] = await _check_ryw_totals(b, group, prefix, run, aggregator)
    finally:
        await aggregator.stop()
    return run


async def _check_ryw_totals(
    b: Bench, group: str, prefix: str, run: h.OpenLoopRun, aggregator: h.Child
) -> dict[str, Any]:
    """Once the aggregator has flushed every record of the topic: the totals of the run's keys
    must be what the ingress accepted (each accepted write is one record)."""
    records = await h.settled_total(b.private.endpoints.kafka_bootstrap, b.private.topic)
    conn = await asyncpg.connect(b.private.database.owner_url, timeout=10)
    try:
        deadline = time.monotonic() + 60
        while (flushed := await conn.fetchval(_OFFSETS, group)) < records:
            if time.monotonic() > deadline or not aggregator.running():
                break
            await asyncio.sleep(0.1)
        row = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(value), 0) AS s FROM counter_totals "
            "WHERE key LIKE $1",
            prefix + "%",
        )
    finally:
        await conn.close()
    assert row is not None
    sent = run.result["sent"]
    checks = {
        "records_in_topic": records,
        "offsets_flushed": int(flushed),
        "keys_counted": int(row["n"]),
        "sum_counted": int(row["s"]),
        "accepted": sent["accepted"],
        "accepted_sum": sent["accepted_value"],
    }
    checks["correct"] = (
        records == checks["offsets_flushed"] == sent["accepted"] == checks["keys_counted"]
        and checks["sum_counted"] == sent["accepted_value"]
    )
    h.say(
        f"read-your-writes totals: {checks['keys_counted']:,} keys, sum {checks['sum_counted']:,} "
        f"for {sent['accepted']:,} writes accepted (sum {sent['accepted_value']:,}): "
        + ("correct" if checks["correct"] else "WRONG")
    )
    return checks


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _run_row(r: h.OpenLoopRun) -> list[object]:
    lag = r.result["send_lag_ms"] or {}
    return [
        *(r.index, r.side, r.load.label, f"{r.load.rate:,.0f}"),
        f"{r.result['achieved_per_s']:,.0f}",
        *(_ms(r.latency(q)) for q in ("p50", "p90", "p99", "p999", "max")),
        _ms(lag.get("p99")),
        r.failures,
        h.fmt(r.server_cpu_us_per_request, 0),
        f"{r.result['driver_cpu_s']:.2f}",
        *(h.pct(r.background_busy), h.pct(r.machine_busy), h.pct(r.others_busy)),
    ]


def _wrong(r: h.OpenLoopRun) -> int:
    return int(r.result["check_failures"] + r.result["warmup_check_failures"])


def _client_note(
    med: dict[str, dict[str, float]], side: str, kept_up: bool, runs: list[h.OpenLoopRun]
) -> str:
    if not kept_up:
        answered = h.median([r.result["achieved_per_s"] for r in runs])
        cpu = h.median([r.result["driver_cpu_s"] / max(1, r.result["scheduled"]) for r in runs])
        return (
            f"did not keep up: {answered:,.0f}/s answered, {cpu * 1e6:,.0f} µs of driver CPU a call"
        )
    return f"+{med[side]['p50'] - med['counter']['p50']:.2f} ms p50 over raw HTTP"


def summarize(runs: list[h.OpenLoopRun]) -> dict[str, dict[str, float]]:
    groups = h.by_side(runs, LOADS)
    return {
        side: {q: h.median([r.latency(q) for r in group]) for q in ("p50", "p99", "max")}
        | {"achieved_per_s": h.median([r.result["achieved_per_s"] for r in group])}
        for side, group in groups.items()
        if group
    }


def report(
    session: h.Session,
    meta: dict[str, Any],
    rounds: h.Rounds[h.OpenLoopRun],
    *,
    ryw: h.OpenLoopRun | None,
    ryw_error: str | None,
    client_low: bool,
) -> int:
    runs, error = rounds.results, rounds.error or ryw_error
    groups = h.by_side(runs, LOADS)
    if not client_low:
        del groups["client-low"]
    if not all(groups.values()):
        lines = [f"- run {r.index} {r.side}: p99 {r.latency('p99'):.2f} ms" for r in runs]
        return session.failed(meta, [r.as_dict() for r in runs], lines, error or "no runs")
    med = summarize(runs)
    counter_p99, history_p99 = med["counter"]["p99"], med["history"]["p99"]
    ratio = {q: med["counter"][q] / med["bare"][q] for q in ("p50", "p99")}
    history_ok = all(r.extra["history_check"]["correct"] for r in groups["history"])
    # a wrong answer fails the run wherever it came from; a request left unanswered fails it
    # too, except the client's: a client that cannot keep up is a figure, reported as such
    answers_ok = all(_wrong(r) == 0 for r in runs) and all(
        r.result["errors"] + r.result["warmup_errors"] == 0
        for r in runs
        if r.side not in CLIENT_SIDES
    )
    kept_up = {
        side: all(
            r.result["errors"] == 0 and r.result["achieved_per_s"] >= 0.95 * r.load.rate
            for r in groups[side]
        )
        for side in CLIENT_SIDES
        if side in groups
    }
    ryw_summary: dict[str, Any] | None = None
    ryw_ok = False
    if ryw is not None:
        flush_ms = ryw.extra["flush_interval_ms"]
        ryw_ok = ryw.failures == 0 and ryw.extra["totals_check"]["correct"]
        ryw_summary = {
            "p50_ms": ryw.latency("p50"),
            "p99_ms": ryw.latency("p99"),
            "max_ms": ryw.latency("max"),
            "flush_interval_ms": flush_ms,
            "p50_over_flush_interval": ryw.latency("p50") / flush_ms,
            "p99_over_flush_interval": ryw.latency("p99") / flush_ms,
            "exact": ryw_ok,
        }
    passed = (
        COUNTER_P99.passes(counter_p99)
        and HISTORY_P99.passes(history_p99)
        and history_ok
        and answers_ok
        and ryw_ok
    )
    summary: dict[str, Any] = {
        "medians_ms": med,
        "counter_p99_ms": counter_p99,
        "counter_limit_ms": COUNTER_P99.value,
        "history_p99_ms": history_p99,
        "history_limit_ms": HISTORY_P99.value,
        "ours_over_bare": ratio,
        "client_kept_up": kept_up,
        "history_answers_correct": history_ok,
        "all_answers_correct": answers_ok,
        "read_your_writes": ryw_summary,
        "verdict": h.verdict(passed, error),
        "error": error,
    }
    w, pg, fill = meta["load"], meta["postgres"], meta["fill"]
    hist = fill["history"]
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**; PostgreSQL {pg['server_version']} "
        f"(synchronous_commit {pg['synchronous_commit']}, shared_buffers {pg['shared_buffers']}). "
        "The load driver, the server under test, PostgreSQL and the Kafka broker share these "
        "cores: the latencies are the stack's on this box.",
        "",
        f"Data: counter_totals holds {fill['totals']['keys']:,} keys `k<n>` (+ the history "
        f"keys), filled by COPY as the owner, with an as_of for each of {meta['partitions']} "
        f"partitions. History: {hist['keys']} keys `h<j>` x {hist['days']} days of minute rows "
        f"({hist['minute_rows']:,} rows), rolled up with {ROLLUP} "
        f"({hist['compaction']['rows_in']:,} rows merged into "
        f"{hist['compaction']['rows_out']:,} in {hist['compaction']['s']:.1f} s), then "
        "VACUUM ANALYZE; rows per width: "
        + ", ".join(f"{k} ms {v:,}" for k, v in hist["rows_per_width_ms"].items())
        + ".",
        "",
        f"Load: open loop (requests on a fixed timetable, each timed from its scheduled send, "
        f"so coordinated omission is avoided), a child process of its own on uvloop; "
        f"{w['rate']:,.0f}/s for {w['duration_s']:g} s after {w['warmup_s']:g} s of warm-up, "
        f"history at {w['history_rate']:,.0f}/s; random keys; {w['repeat']} rounds, the order "
        "of bare and ours alternating, each server started afresh. bare = "
        "benchmarks/bare_app.py's `GET /health/ready` (constant JSON, same uvicorn settings); "
        "ours = `distcount ingress`. Raw HTTP: keep-alive HTTP/1.1 over asyncio streams; client "
        "= `distcount_client.AsyncClient` (httpx, no retries).",
        "",
        h.table(
            [
                *("run", "side", "load", "rate/s", "answered/s"),
                *("p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "send lag p99 ms"),
                *("failed or wrong", "server CPU µs/req", "driver CPU s"),
                *("busy before", "busy during", "others during"),
            ],
            [_run_row(r) for r in runs] + ([_run_row(ryw)] if ryw is not None else []),
        ),
        "",
        h.table(
            ["median over rounds", "p50 ms", "p99 ms", "max ms", "limit", "ours / bare"],
            [
                [
                    "bare `GET /health/ready`",
                    *(_ms(med["bare"][q]) for q in ("p50", "p99", "max")),
                    "",
                    "",
                ],
                [
                    "ours `GET /counters/{key}` (raw HTTP)",
                    *(_ms(med["counter"][q]) for q in ("p50", "p99", "max")),
                    f"p99 {COUNTER_P99}",
                    f"p50 {ratio['p50']:.2f}x, p99 {ratio['p99']:.2f}x",
                ],
                *(
                    [
                        f"client `get_counter_value` at {groups[side][0].load.rate:,.0f}/s",
                        *(_ms(med[side][q]) for q in ("p50", "p99", "max")),
                        "",
                        _client_note(med, side, kept_up[side], groups[side]),
                    ]
                    for side in CLIENT_SIDES
                    if side in groups
                ),
                [
                    "history 30 d at 1 h (720 points)",
                    *(_ms(med["history"][q]) for q in ("p50", "p99", "max")),
                    f"p99 {HISTORY_P99}",
                    "",
                ],
            ],
        ),
        "",
    ]
    if ryw_summary is not None and ryw is not None:
        checks = ryw.extra["totals_check"]
        parts = ryw.result["parts_ms"]
        md += [
            f"Read-your-writes: `distcount aggregator` (flush interval "
            f"{ryw_summary['flush_interval_ms']} ms) and an ingress on the same group; "
            f"{ryw.load.rate:g} operations/s for {ryw.load.duration_s:g} s, each `incr(<own "
            "key>, v)` then `get_counter_value(key, after=token)`, timed from its scheduled "
            f"start to the read's answer: p50 **{ryw_summary['p50_ms']:,.0f} ms**, p99 "
            f"{ryw_summary['p99_ms']:,.0f} ms, max {ryw_summary['max_ms']:,.0f} ms; "
            f"p50 / flush interval = **{ryw_summary['p50_over_flush_interval']:.2f}** "
            f"(p99 / flush interval {ryw_summary['p99_over_flush_interval']:.2f}). The POST took "
            f"p50 {parts['post']['p50']:.1f} ms when every write went through. Every answer "
            f"complete with exactly its write: {'yes' if ryw.failures == 0 else 'NO'}; totals: "
            f"{checks['keys_counted']:,} keys, sum {checks['sum_counted']:,} for "
            f"{checks['accepted']:,} writes accepted "
            f"({'correct' if checks['correct'] else 'WRONG'}).",
            "",
        ]
    md += [
        f"**Headline: `GET /counters/{{key}}` p99 {counter_p99:.2f} ms ({COUNTER_P99}); history "
        f"p99 {history_p99:.2f} ms ({HISTORY_P99}); ours / bare p99 {ratio['p99']:.2f}x: "
        f"{summary['verdict']}**"
        + ("" if history_ok and answers_ok else " (some answers were wrong: see the table)")
        + ("" if ryw_ok else " (read-your-writes was not exact or did not run)"),
        *h.error_lines(error),
        "",
        "Send lag = how late the driver sent a request against its timetable (it is inside the "
        "latencies, which are timed from the timetable). Busy before / during = the whole "
        "machine's CPU use in the second before the server started / during the measured load; "
        "others during = the part of it neither the server nor the drivers used (PostgreSQL, "
        "Kafka, and any other process: while it is high, the latencies are the machine's).",
    ]
    data = {
        **meta,
        "runs": [r.as_dict() for r in runs],
        "read_your_writes": ryw.as_dict() if ryw is not None else None,
        "summary": summary,
    }
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("reads", "Read side benchmark")
    endpoints = h.Endpoints.load()
    h.say(
        f"reads benchmark: nproc {session.machine['nproc']}; {args.keys:,} keys, {args.rate:,}/s "
        f"for {args.duration:g} s, {args.repeat} rounds; {endpoints.describe()}"
    )
    rounds: h.Rounds[h.OpenLoopRun] = h.Rounds()
    ryw: h.OpenLoopRun | None = None
    ryw_error: str | None = None
    fill = Fill(group=f"bench-reads-{h.suffix()}")
    async with h.private_stack(endpoints, "bench.reads", args.partitions) as private:
        pg = await h.postgres_facts(private.database.owner_url)
        settings = load_settings(private.env({"DISTCOUNT_ROLLUP": ROLLUP}))
        conn = await asyncpg.connect(private.database.owner_url, timeout=10)
        try:
            await fill_totals(conn, args, fill)
            await fill_offsets(conn, fill.group, private.topic, args.partitions)
            await fill_history(conn, args, settings, fill)
        finally:
            await conn.close()
        b = Bench(args, private, fill, session.log_dir)
        await rounds.play(args.repeat, lambda index: round_of(b, index))
        if rounds.error is None:
            try:
                ryw = await read_your_writes(b)
            except Exception as exc:  # report the rounds, and why this part is missing
                ryw_error = h.describe(exc)
                h.say(f"read-your-writes failed: {exc}")
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        postgres=pg,
        partitions=args.partitions,
        fill=fill.facts,
        load={
            "rate": args.rate,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "history_rate": args.history_rate,
            "ryw_rate": args.ryw_rate,
            "ryw_duration_s": args.ryw_duration,
            "repeat": args.repeat,
        },
        logs=str(session.log_dir),
    )
    return report(
        session, meta, rounds, ryw=ryw, ryw_error=ryw_error, client_low=args.client_low_rate > 0
    )


def arguments() -> argparse.Namespace:
    parser = h.parser(
        "The read side under open-loop load, against a bare endpoint.",
        repeat=3,
        repeat_help="rounds (bare, then the three loads of ours), interleaved",
    )
    add = parser.add_argument
    add("--keys", type=int, default=1_000_000, help="keys in counter_totals")
    add("--rate", type=int, default=1000, help="requests/s of the counter reads (and bare)")
    add("--duration", type=float, default=10.0, help="seconds measured per load")
    add("--warmup", type=float, default=2.0, help="seconds of warm-up before each load")
    add("--partitions", type=int, default=6, help="partitions of the private topic")
    add(
        "--client-processes",
        type=int,
        default=2,
        help="driver processes sharing the client's load (httpx costs about 1 ms of CPU a call)",
    )
    add(
        "--client-low-rate",
        type=int,
        default=200,
        help="the client's calls/s in a second load, one it can keep up with (0: none)",
    )
    add("--history-keys", type=int, default=20, help="keys with a month of minute rows")
    add("--history-days", type=int, default=31, help="days of minute rows per history key")
    add("--history-rate", type=int, default=100, help="requests/s of the history reads")
    add("--ryw-rate", type=int, default=20, help="read-your-writes operations/s")
    add("--ryw-duration", type=float, default=30.0, help="seconds of read-your-writes measured")
    add(
        "--flush-interval-ms",
        type=int,
        default=0,
        help="the aggregator's DISTCOUNT_FLUSH_INTERVAL_MS (default: the setting's own)",
    )
    add("--ready-timeout-s", type=float, default=60.0, help="wait this long for /health/ready")
    quick = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in QUICK.items())
    add("--quick", action="store_true", help=f"a quick look: {quick}")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    h.at_least(parser, args, 1, "--keys", "--rate", "--repeat", "--history-keys", "--ryw-rate")
    h.at_least(parser, args, 1, "--partitions", "--history-rate", "--client-processes")
    if args.history_days <= HISTORY_DAYS:
        parser.error(
            f"--history-days must be above {HISTORY_DAYS}: the reads ask for {HISTORY_DAYS} days"
        )
    if args.duration <= 0 or args.ryw_duration <= 0:
        parser.error("--duration and --ryw-duration must be above 0")
    return args


def main() -> None:
    args = arguments()
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
