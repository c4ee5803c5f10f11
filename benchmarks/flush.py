"""The aggregator's flush transaction against a raw COPY of the same rows, side by side.

A private database (no Kafka), migrated; the flush logs in as the services' role. For each
layout (K keys x B buckets, one entry per key and bucket, like the state of one partition at a
flush), R rounds, each running every side once, the order turning round by round:

- **flush**: `distcount_store.flush_partition`, the transaction the aggregator commits: lock and
  check the stored offset, write the event rows, upsert the totals (keys sorted), advance the
  offset. Timed from its input (the `{bucket start: {key: delta}}` mapping the aggregator
  hands over) to its commit, so its own preparation of the rows is inside.
- **copy**: `asyncpg`'s `copy_records_to_table` of the same rows, `(key, bucket_start, delta)`
  tuples built beforehand, into `counter_events` alone, in a transaction of its own: the bare
  rate at which this stack takes those rows. The denominator of the headline.
- **copy+upsert**: the same COPY, then the totals upserted from arrays built beforehand (sorted
  keys, as the flush does), in one transaction: the least the schema asks for those rows (both
  tables), timed statement by statement, to show where the flush's time goes.

Before every side, as the schema's owner: `counter_events` is truncated and `counter_totals`
vacuumed, so each side finds the same tables. By default `counter_totals` already holds every
key (the steady state: a flush updates counters that exist); `--totals empty` starts each side
with an empty one (a first flush of new keys). After every side its writes are checked: the
rows, the sum of the deltas, the totals' sum, and the offset.

Headline per layout: median rows/s of flush / median rows/s of copy, **floor 0.7**; PASS needs
it for every layout and every check. Beside it: the ratio of each round's pair (neighbours in
time), the CPU seconds of this process and of the PostgreSQL backend per side, and how busy the
machine was before and during each side. A round during which other processes took 15 % or
more of the machine (not this process, its backend, or PostgreSQL's own background processes)
is run again, at most `--max-extra` times.

    .venv/bin/python benchmarks/flush.py [--layouts 100000x1,10000x10] [--repeat 5]
    .venv/bin/python benchmarks/flush.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

import harness as h
from distcount_store import PartitionFlush, Written, flush_partition
from harness._machine import busy_between, cpu_jiffies, proc_cpu_seconds

RATIO = h.Limit(0.7, floor=True)
SIDES = ("flush", "copy", "copy+upsert")
QUICK = {"layouts": "20000x1,2000x10", "repeat": 2}
GROUP, TOPIC, PARTITION = "bench.flush", "bench.flush", 0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# as the flush writes the totals, from arrays built beforehand
_UPSERT = """
INSERT INTO counter_totals AS t (key, value)
SELECT key, delta FROM unnest($1::text[], $2::bigint[]) AS d(key, delta)
ON CONFLICT (key) DO UPDATE SET value = t.value + excluded.value, updated_at = now()
"""
# PostgreSQL's own processes that a write keeps busy (the cmdline's first word after "postgres:")
_PG_HELPERS = ("checkpointer", "background", "walwriter", "autovacuum", "logical", "walsender")


def delta(key: int, bucket: int) -> int:
    """What key `key` counted in bucket `bucket` since the last flush: 1 to 50."""
    return 1 + (key * 7 + bucket * 13) % 50


@dataclass(frozen=True)
class Layout:
    keys: int
    buckets: int
    bucket_ms: int

    @classmethod
    def parse(cls, text: str, bucket_ms: int) -> Layout:
        keys, _, buckets = text.lower().partition("x")
        return cls(int(keys), int(buckets or 1), bucket_ms)

    @property
    def name(self) -> str:
        return f"{self.keys:,} keys x {self.buckets} buckets"

    @property
    def entries(self) -> int:
        return self.keys * self.buckets


@dataclass
class Workload:
    """One layout's rows, in the shape each side takes them, built before any is timed."""

    layout: Layout
    deltas: dict[int, dict[str, int]]  # the flush's input
    records: list[tuple[str, datetime, int]]  # the COPY's
    sorted_keys: list[str]  # the upsert's
    sums: list[int]
    rows: int
    delta_sum: int

    @classmethod
    def build(cls, layout: Layout, first_bucket_ms: int) -> Workload:
        keys = [f"k{i}" for i in range(layout.keys)]
        deltas: dict[int, dict[str, int]] = {}
        records: list[tuple[str, datetime, int]] = []
        sums = [0] * layout.keys
        for b in range(layout.buckets):
            start_ms = first_bucket_ms + b * layout.bucket_ms
            start = _EPOCH + timedelta(milliseconds=start_ms)
            bucket = deltas[start_ms] = {}
            for i, key in enumerate(keys):
                d = delta(i, b)
                bucket[key] = d
                records.append((key, start, d))
                sums[i] += d
        order = sorted(range(layout.keys), key=keys.__getitem__)
        return cls(
            layout,
            deltas,
            records,
            [keys[i] for i in order],
            [sums[i] for i in order],
            len(records),
            sum(sums),
        )


@dataclass
class SideResult:
    layout: str
    side: str
    index: int
    rows: int
    seconds: float  # from the call to the commit
    cpu_s: float  # this process
    backend_cpu_s: float | None  # the PostgreSQL backend serving the side
    helpers_cpu_s: float | None  # PostgreSQL's background processes
    busy_before: float | None
    busy_during: float | None
    others_during: float | None  # busy with neither this process, its backend nor PG's helpers
    parts_s: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    counted: bool = True  # False: its round was disturbed and run again

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def correct(self) -> bool:
        return bool(self.checks.get("correct"))

    @property
    def disturbed(self) -> bool:
        return self.others_during is not None and self.others_during >= h.QUIET_BELOW

    def as_dict(self) -> dict[str, Any]:
        extra = {"rows_per_s": self.rate, "disturbed": self.disturbed}
        return {**asdict(self), **extra}


class CpuWatch:
    """The machine's busy share during a side, and how much of it was the side's own: this
    process, its PostgreSQL backend, and PostgreSQL's background processes (WAL writer,
    checkpointer, autovacuum), which a write keeps busy too."""

    def __init__(self, backend_pid: int) -> None:
        self.backend_pid = backend_pid
        self.helper_pids = _pg_helpers(backend_pid)

    def _helpers_s(self) -> float | None:
        times = [proc_cpu_seconds(pid) for pid in self.helper_pids]
        return sum(t for t in times if t is not None) if self.helper_pids else None

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        jiffies, cpu = cpu_jiffies(), time.process_time()
        backend, helpers = proc_cpu_seconds(self.backend_pid), self._helpers_s()
        wall = time.perf_counter()
        yield
        into["seconds"] = time.perf_counter() - wall
        into["cpu_s"] = time.process_time() - cpu
        after_backend, after_helpers = proc_cpu_seconds(self.backend_pid), self._helpers_s()
        into["backend_cpu_s"] = (
            after_backend - backend if backend is not None and after_backend is not None else None
        )
        into["helpers_cpu_s"] = (
            after_helpers - helpers if helpers is not None and after_helpers is not None else None
        )
        busy = busy_between(jiffies, cpu_jiffies())
        into["busy_during"] = busy
        into["others_during"] = None
        if busy is not None and into["seconds"] > 0:
            ours = into["cpu_s"] + (into["backend_cpu_s"] or 0.0) + (into["helpers_cpu_s"] or 0.0)
            cores = len(os.sched_getaffinity(0))
            into["others_during"] = max(0.0, busy - ours / (into["seconds"] * cores))


def _pg_helpers(backend_pid: int) -> list[int]:
    """PostgreSQL's background processes: the postmaster's children that are no backend (none
    when PostgreSQL runs out of this machine's sight, in a container of its own, say)."""
    try:
        stat = Path(f"/proc/{backend_pid}/stat").read_text()
    except OSError:
        return []
    postmaster = int(stat.rsplit(")", 1)[1].split()[1])
    helpers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != postmaster:
                continue
            words = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().split()
            if len(words) > 1 and words[0] == "postgres:" and words[1] in _PG_HELPERS:
                helpers.append(int(entry.name))
    return helpers


class Bench:
    """One layout's rounds: the connections (the sides' as the services' role, the resets and
    checks as the owner) and the partition's stored offset, which the flushes advance."""

    def __init__(
        self,
        args: argparse.Namespace,
        work: Workload,
        conn: asyncpg.Connection,
        owner: asyncpg.Connection,
    ) -> None:
        self.args = args
        self.work = work
        self.conn = conn
        self.owner = owner
        self.offset: int | None = None
        self.watch = CpuWatch(conn.get_server_pid())

    async def setup(self) -> None:
        """Empty tables; in the steady state, a total for every key."""
        await self.owner.execute(
            "TRUNCATE counter_events, counter_totals, consumer_offsets", timeout=600
        )
        if self.args.totals_fillfactor:
            await self.owner.execute(
                f"ALTER TABLE counter_totals SET (fillfactor = {self.args.totals_fillfactor})"
            )
        if self.args.totals == "steady":
            await self.owner.copy_records_to_table(
                "counter_totals",
                records=((key, 0) for key in self.work.sorted_keys),
                columns=["key", "value"],
                timeout=600,
            )
        await self.owner.execute("VACUUM FULL ANALYZE counter_totals", timeout=600)

    async def reset(self) -> None:
        await self.owner.execute("TRUNCATE counter_events", timeout=600)
        if self.args.totals == "empty":
            await self.owner.execute("TRUNCATE counter_totals", timeout=600)
        await self.owner.execute("VACUUM counter_totals", timeout=600)

    async def totals_sum(self) -> int:
        return int(await self.owner.fetchval("SELECT coalesce(sum(value), 0) FROM counter_totals"))

    async def run_side(self, side: str, index: int, warmup: bool = False) -> SideResult:
        await self.reset()
        busy_before = None if warmup else await h.background_busy(self.args.wait_quiet_s)
        totals_before = await self.totals_sum()
        figures: dict[str, Any] = {}
        parts: dict[str, float] = {}
        work = self.work
        with self.watch.measure(figures):
            if side == "flush":
                rows = await self._flush()
            elif side == "copy":
                rows = await self._copy()
            else:
                async with self.conn.transaction():
                    started = time.perf_counter()
                    rows = await self._copy()
                    copied = time.perf_counter()
                    await self.conn.execute(_UPSERT, work.sorted_keys, work.sums, timeout=600)
                    upserted = time.perf_counter()
                parts = {
                    "copy_s": copied - started,
                    "upsert_s": upserted - copied,
                    "commit_s": time.perf_counter() - upserted,
                }
        checks = await self.check(side, rows, totals_before)
        return SideResult(
            work.layout.name,
            side,
            index,
            rows,
            figures["seconds"],
            figures["cpu_s"],
            figures["backend_cpu_s"],
            figures["helpers_cpu_s"],
            busy_before,
            figures["busy_during"],
            figures["others_during"],
            parts,
            checks,
        )

    async def _flush(self) -> int:
        next_offset = (self.offset or 0) + self.work.rows
        result = await flush_partition(
            self.conn,
            PartitionFlush(GROUP, TOPIC, PARTITION, self.offset, next_offset, self.work.deltas),
        )
        if not isinstance(result, Written):
            raise RuntimeError(f"the flush was fenced: {result}")
        self.offset = next_offset
        return result.rows

    async def _copy(self) -> int:
        status = await self.conn.copy_records_to_table(
            "counter_events",
            records=self.work.records,
            columns=["key", "bucket_start", "delta"],
            timeout=600,
        )
        return int(status.rpartition(" ")[2])

    async def check(self, side: str, rows: int, totals_before: int) -> dict[str, Any]:
        work = self.work
        row = await self.owner.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(delta), 0) AS s, "
            "count(DISTINCT bucket_start) AS b FROM counter_events"
        )
        assert row is not None
        totals_added = await self.totals_sum() - totals_before
        want_totals = 0 if side == "copy" else work.delta_sum
        checks: dict[str, Any] = {
            "rows": row["n"],
            "delta_sum": int(row["s"]),
            "buckets": row["b"],
            "totals_added": totals_added,
        }
        ok = (
            rows == work.rows == row["n"]
            and int(row["s"]) == work.delta_sum
            and row["b"] == work.layout.buckets
            and totals_added == want_totals
        )
        if side == "flush":
            stored = await self.owner.fetchval(
                "SELECT next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2 "
                "AND partition = $3",
                GROUP,
                TOPIC,
                PARTITION,
            )
            checks["stored_offset"] = stored
            ok = ok and stored == self.offset
        checks["correct"] = ok
        return checks


async def measure_layout(
    args: argparse.Namespace, database: h.Database, layout: Layout, first_bucket_ms: int
) -> h.Rounds[SideResult]:
    h.say(f"{layout.name}: building {layout.entries:,} rows")
    work = Workload.build(layout, first_bucket_ms)
    conn = await asyncpg.connect(database.url, timeout=10)
    owner = await asyncpg.connect(database.owner_url, timeout=10)
    try:
        bench = Bench(args, work, conn, owner)
        await bench.setup()
        for side in SIDES:  # statements prepared, caches warm: thrown away
            await bench.run_side(side, 0, warmup=True)

        async def round_(index: int) -> AsyncIterator[SideResult]:
            order = SIDES[(index - 1) % len(SIDES) :] + SIDES[: (index - 1) % len(SIDES)]
            for side in order:
                result = await bench.run_side(side, index)
                _say_side(result)
                yield result

        return await h.Rounds[SideResult]().play(
            args.repeat, round_, disturbed=_set_aside, max_extra=args.max_extra
        )
    finally:
        await conn.close()
        await owner.close()


def _set_aside(results: list[SideResult]) -> bool:
    if not any(r.disturbed for r in results):
        return False
    for r in results:
        r.counted = False
    return True


def _say_side(r: SideResult) -> None:
    parts = ", ".join(f"{k.removesuffix('_s')} {v * 1000:,.0f} ms" for k, v in r.parts_s.items())
    h.say(
        f"  round {r.index} {r.side:>11}: {r.rate:,.0f} rows/s ({r.seconds * 1000:,.0f} ms"
        f"{'; ' + parts if parts else ''}; CPU here {r.cpu_s * 1000:,.0f} ms, backend "
        f"{_ms(r.backend_cpu_s)}; others {h.pct(r.others_during)})"
        + ("" if r.correct else f" CHECK FAILED: {r.checks}")
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _median_of(results: list[SideResult], attr: str) -> float | None:
    values = [getattr(r, attr) for r in results if getattr(r, attr) is not None]
    return h.median(values) if values else None


def summarise(layout: str, results: list[SideResult]) -> dict[str, Any]:
    counted = [r for r in results if r.counted]
    sides = h.by_side(counted, SIDES)
    rate = {side: h.median([r.rate for r in runs]) for side, runs in sides.items()}
    by_round: dict[int, dict[str, SideResult]] = {}
    for r in counted:
        by_round.setdefault(r.index, {})[r.side] = r
    pairs = [
        rs["flush"].rate / rs["copy"].rate
        for rs in by_round.values()
        if {"flush", "copy"} <= rs.keys()
    ]
    parts = {
        name: h.median([r.parts_s[name] for r in sides["copy+upsert"]])
        for name in ("copy_s", "upsert_s", "commit_s")
        if sides["copy+upsert"]
    }
    ratio = rate["flush"] / rate["copy"] if sides["flush"] and sides["copy"] else None
    return {
        "layout": layout,
        "rows_per_s": rate,
        "ratio": ratio,
        "pair_ratios": pairs,
        "pair_ratio_median": h.median(pairs) if pairs else None,
        "copy_upsert_over_copy": (
            rate["copy+upsert"] / rate["copy"] if sides["copy+upsert"] and sides["copy"] else None
        ),
        "copy_upsert_parts_s": parts,
        "rounds": len(by_round),
        "correct": all(r.correct for r in results),
        "passes": ratio is not None and RATIO.passes(ratio),
    }


def report(
    session: h.Session, meta: dict[str, Any], results: list[SideResult], error: str | None
) -> int:
    layouts = list(dict.fromkeys(r.layout for r in results))
    if not layouts:
        return session.failed(meta, [], [], error or "no side measured")
    summaries = [summarise(name, [r for r in results if r.layout == name]) for name in layouts]
    passed = all(s["passes"] and s["correct"] for s in summaries) and len(summaries) == len(
        meta["workload"]["layouts"]
    )
    pg, w = meta["postgres"], meta["workload"]
    rows = []
    for s in summaries:
        mine = [r for r in results if r.layout == s["layout"] and r.counted]
        for side in SIDES:
            runs = [r for r in mine if r.side == side]
            if not runs:
                continue
            rows.append(
                [
                    s["layout"],
                    side,
                    len(runs),
                    f"{s['rows_per_s'][side]:,.0f}",
                    f"{min(r.rate for r in runs):,.0f} to {max(r.rate for r in runs):,.0f}",
                    _ms(h.median([r.seconds for r in runs])),
                    _ms(h.median([r.cpu_s for r in runs])),
                    _ms(_median_of(runs, "backend_cpu_s")),
                    h.pct(_median_of(runs, "others_during")),
                    "ok" if all(r.correct for r in runs) else "FAILED",
                ]
            )
    headline = []
    for s in summaries:
        parts = s["copy_upsert_parts_s"]
        where = (
            f"; copy+upsert {h.fmt(s['copy_upsert_over_copy'])}x copy (median COPY "
            f"{_ms(parts.get('copy_s'))}, upsert {_ms(parts.get('upsert_s'))}, commit "
            f"{_ms(parts.get('commit_s'))})"
            if parts
            else ""
        )
        headline.append(
            f"- **{s['layout']}: flush {h.fmt(s['ratio'])}x copy** ({RATIO}; each round's pair: "
            f"median {h.fmt(s['pair_ratio_median'])} of "
            f"{', '.join(h.fmt(p) for p in s['pair_ratios'])}){where}"
            + ("" if s["correct"] else " — CHECKS FAILED")
        )
    set_aside = sum(1 for r in results if not r.counted)
    totals = (
        "already holds every key (the steady state)"
        if w["totals"] == "steady"
        else "is emptied before each side (a first flush of new keys)"
    )
    fillfactor = (
        f" **What-if: `counter_totals` altered to fillfactor {w['totals_fillfactor']}** (not the "
        "schema as migrated)."
        if w["totals_fillfactor"]
        else ""
    )
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**; PostgreSQL {pg['server_version']} "
        f"(synchronous_commit {pg['synchronous_commit']}, fsync {pg['fsync']}, shared_buffers "
        f"{pg['shared_buffers']}). This process and PostgreSQL share these cores.",
        "",
        f"Workload: per layout, one entry per key and bucket ({w['bucket_ms']:,} ms buckets), "
        "deltas 1 to 50; `counter_events` truncated and `counter_totals` vacuumed before every "
        f"side; `counter_totals` {totals}.{fillfactor} flush = `flush_partition` (the "
        "aggregator's transaction, from its `{bucket: {key: delta}}` input, as the services' "
        "role); copy = `copy_records_to_table` of `(key, bucket_start, delta)` tuples built "
        "beforehand into `counter_events` only; copy+upsert = that COPY then the totals upsert "
        "from arrays built beforehand, in one transaction. Interleaved rounds, the order turning "
        f"each round; medians over {w['repeat']} counted rounds"
        + (f" ({set_aside} side runs set aside: others took the machine)" if set_aside else "")
        + ".",
        "",
        h.table(
            [
                *("layout", "side", "runs", "rows/s (median)", "min to max", "time"),
                *("CPU here", "backend CPU", "others during", "checks"),
            ],
            rows,
        ),
        "",
        *headline,
        "",
        f"**Verdict: {h.verdict(passed, error)}** (every layout's flush ≥ {RATIO.value:g}x "
        "copy, and every check).",
        *h.error_lines(error),
    ]
    summary = {
        "layouts": summaries,
        "limit": RATIO.value,
        "verdict": h.verdict(passed, error),
        "error": error,
    }
    data = {**meta, "runs": [r.as_dict() for r in results], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("flush", "Flush against COPY", ("asyncpg",))
    endpoints = h.Endpoints.load()
    layouts = [Layout.parse(text, args.bucket_ms) for text in args.layouts.split(",")]
    h.say(
        f"flush benchmark: {', '.join(layout.name for layout in layouts)}; {args.repeat} rounds; "
        f"{endpoints.describe()}"
    )
    results: list[SideResult] = []
    error: str | None = None
    pg: dict[str, str] = {}
    role: str | None = None
    async with h.fresh_database(endpoints, "bench_flush") as database:
        pg = await h.postgres_facts(database.owner_url)
        role = database.services_role
        # whole buckets some minutes ago, as a flush writes them
        now_ms = int(time.time() * 1000)
        first_bucket_ms = now_ms - now_ms % args.bucket_ms - 600_000
        for layout in layouts:
            try:
                rounds = await measure_layout(args, database, layout, first_bucket_ms)
            except Exception as exc:  # report the layouts measured, and why the rest were not
                error = h.describe(exc)
                h.say(f"stopped early: {exc}")
                break
            results += rounds.results
            if rounds.error:
                error = rounds.error
                break
    workload = {
        "layouts": [asdict(layout) for layout in layouts],
        "repeat": args.repeat,
        "bucket_ms": args.bucket_ms,
        "totals": args.totals,
        "totals_fillfactor": args.totals_fillfactor,
        "max_extra": args.max_extra,
        "disturbed_at_others": h.QUIET_BELOW,
    }
    meta = session.meta(postgres=pg, workload=workload, services_role=role)
    return report(session, meta, results, error)


def arguments() -> argparse.Namespace:
    parser = h.parser(
        "The aggregator's flush transaction against a raw COPY of the same rows.",
        repeat=5,
        repeat_help="rounds per layout (each runs every side once)",
    )
    add = parser.add_argument
    add(
        "--layouts",
        default="100000x1,10000x10",
        help="comma-separated KEYSxBUCKETS: one flush of KEYS*BUCKETS entries each",
    )
    add("--bucket-ms", type=int, default=60_000, help="the buckets' width")
    add(
        "--totals",
        choices=("steady", "empty"),
        default="steady",
        help="counter_totals before each side: holding every key, or empty",
    )
    add(
        "--totals-fillfactor",
        type=int,
        default=0,
        help="a what-if: ALTER counter_totals to this fillfactor first (0: as migrated)",
    )
    add("--max-extra", type=int, default=5, help="disturbed rounds run again, at most, per layout")
    quick = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
    add("--quick", action="store_true", help=f"a quick look: {quick}")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    h.at_least(parser, args, 1, "--repeat", "--bucket-ms")
    h.at_least(parser, args, 0, "--max-extra")
    try:
        layouts = [Layout.parse(text, args.bucket_ms) for text in args.layouts.split(",")]
    except ValueError:
        parser.error("--layouts must be like 100000x1,10000x10")
    if any(layout.keys < 1 or layout.buckets < 1 for layout in layouts):
        parser.error("--layouts needs at least 1 key and 1 bucket each")
    if args.totals_fillfactor and not 10 <= args.totals_fillfactor <= 100:
        parser.error("--totals-fillfactor must be 10 to 100")
    return args


def main() -> None:
    args = arguments()
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
