"""Scale-out on one machine: one aggregator against two in the same consumer group, on the same
pre-filled topic, in one run; and two of which one is killed half-way, for the totals.

A fresh topic (6 partitions) is pre-filled with N single-increment records over K keys (record
i carries key `k{i mod K}`). Then, in interleaved rounds (the order turns each round):

- **1**: one `distcount aggregator`, timed from its spawn to the moment PostgreSQL holds every
  partition's offset at the topic's end (polled every 100 ms).
- **2**: two `distcount aggregator` processes with one group id, spawned together, timed the
  same way. Each logs the partitions it is given ("assigned partitions [...]"); the last
  assignment of each must be disjoint and cover the topic: the partitions spread.
- **2, one killed** (checked, not timed against the others): two again; once a third of the
  offsets are stored, one gets SIGKILL. The survivor is given its partitions once the group
  notices (the consumer's session timeout), reads them from the offsets the killed one stored,
  and the totals must still be exact.

After every run: the sum of `counter_totals`, of `counter_events.delta` and of the stored offsets
must each equal N, with K keys: every record counted once. Headline: median records/s of 2 /
median records/s of 1, **floor 1.6** where the cores allow it: on a 2-core machine that also
runs the broker and PostgreSQL they do not (the report gives each side's CPU seconds, the
machine's load, and so what the second process had to work with).

    .venv/bin/python benchmarks/scale_out.py            # 3,000,000 records, 2 rounds
    .venv/bin/python benchmarks/scale_out.py --quick    # 500,000 records, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

import harness as h
from aggregator import ours_settings
from distcount_codec import Increment, encode_record

SIDES = ("1", "2")
KILLED = "2, one killed"
FLOOR = h.Limit(1.6, floor=True)
POLL_S = 0.1
QUICK = {"records": 500_000, "repeat": 1}
_OFFSETS = h.STORED_OFFSETS
_ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")


@dataclass
class Run:
    side: str
    index: int
    wall_s: float
    cpu_s: list[float | None]
    assignments: list[list[int]]  # each process's last assignment
    checks: dict[str, Any]
    busy_before: float | None
    killed_at_offsets: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def records_per_s(self) -> float:
        return float(self.checks["expected_sum"]) / self.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "records_per_s": self.records_per_s}


@dataclass(frozen=True)
class Bench:
    args: argparse.Namespace
    private: h.Private
    expected: int
    partitions: int
    log_dir: Path


def last_assignment(child: h.Child) -> list[int]:
    """The partitions a process was given last (its log's last "assigned partitions" line)."""
    found: list[int] = []
    for line in child.lines:
        if match := _ASSIGNED.search(line.text):
            found = [int(p) for p in match.group(1).split(",") if p.strip()]
    return found


async def run_side(b: Bench, side: str, index: int) -> Run:
    processes = 1 if side == "1" else 2
    group = f"bench-scale-{h.suffix()}"
    env = b.private.env(ours_settings(group, b.args.flush_interval_ms))
    conn = await asyncpg.connect(b.private.database.owner_url, timeout=10)
    children: list[h.Child] = []
    try:
        idle = await h.background_busy(b.args.wait_quiet_s)
        h.say(f"run {index} [{side}]: spawning {processes} aggregator(s) (group {group})")
        started = time.monotonic()
        for n in range(processes):
            log = b.log_dir / f"run{index}-{side.replace(', ', '-').replace(' ', '_')}-{n}.log"
            children.append(await h.spawn_service("aggregator", env, log))
        killed_at = None
        deadline = started + b.args.timeout_s
        progress = h.Progress(f"[{side}]", b.expected, "offsets stored")
        while True:
            stored = int(await conn.fetchval(_OFFSETS, group, b.private.topic))
            now = time.monotonic()
            if stored >= b.expected:
                break
            if side == KILLED and killed_at is None and stored >= b.expected // 3:
                children[0].process.send_signal(signal.SIGKILL)
                killed_at = stored
                h.say(f"run {index} [{side}]: SIGKILL to one aggregator at {stored:,} offsets")
            for child in children[1:] if killed_at is not None else children:
                if not child.running():
                    raise child.exited()
            if now > deadline:
                raise TimeoutError(f"{stored:,} of {b.expected:,} offsets stored in time")
            progress.update(stored)
            await asyncio.sleep(POLL_S)
        wall_s = now - started
        cpu = [child.cpu_seconds() for child in children]
        assignments = [last_assignment(child) for child in children]
    finally:
        for child in children:
            await child.stop()
    try:
        checks = await check_totals(conn, group, b)
        await conn.execute("TRUNCATE counter_events, counter_totals, consumer_offsets")
    finally:
        await conn.close()
    run = Run(side, index, wall_s, cpu, assignments, checks, idle, killed_at)
    if side == "2":
        spread = sorted(p for a in assignments for p in a)
        run.checks["spread"] = spread == list(range(b.partitions)) and all(assignments)
        run.checks["correct"] = run.checks["correct"] and run.checks["spread"]
    h.say(
        f"run {index} [{side}]: {b.expected:,} records in {wall_s:.2f} s "
        f"({run.records_per_s:,.0f}/s), assignments {assignments}, totals "
        f"{'exact' if checks['correct'] else 'WRONG'}"
    )
    return run


async def check_totals(conn: asyncpg.Connection, group: str, b: Bench) -> dict[str, Any]:
    totals = await conn.fetchrow("SELECT coalesce(sum(value), 0) s, count(*) n FROM counter_totals")
    events = await conn.fetchval("SELECT coalesce(sum(delta), 0) FROM counter_events")
    assert totals is not None
    checks: dict[str, Any] = {
        "totals_sum": int(totals["s"]),
        "totals_keys": totals["n"],
        "events_sum": int(events),
        "offsets_sum": int(await conn.fetchval(_OFFSETS, group, b.private.topic)),
        "expected_sum": b.expected,
        "expected_keys": min(b.expected, b.args.keys),
    }
    checks["correct"] = (
        checks["totals_sum"] == checks["events_sum"] == checks["offsets_sum"] == b.expected
        and checks["totals_keys"] == checks["expected_keys"]
    )
    return checks


def report(session: h.Session, meta: dict[str, Any], rounds: h.Rounds[Run]) -> int:
    runs = rounds.results
    timed = h.by_side([r for r in runs if r.side in SIDES], SIDES)
    rates = {side: h.median([r.records_per_s for r in timed[side]]) for side in SIDES}
    ratio = rates["2"] / rates["1"] if timed["1"] and timed["2"] else float("nan")
    correct = bool(runs) and all(r.checks["correct"] for r in runs)
    killed = [r for r in runs if r.side == KILLED]
    passed = FLOOR.passes(ratio) and correct and bool(killed)
    verdict = h.verdict(passed, rounds.error)
    rows = [
        [
            r.index,
            r.side,
            f"{r.wall_s:.2f}",
            round(r.records_per_s),
            " + ".join("-" if c is None else f"{c:.2f}" for c in r.cpu_s),
            " / ".join(str(a) for a in r.assignments),
            "-" if r.killed_at_offsets is None else f"{r.killed_at_offsets:,}",
            h.pct(r.busy_before),
            "exact" if r.checks["correct"] else "WRONG",
        ]
        for r in runs
    ]
    header = ["run", "aggregators", "wall s", "records/s", "CPU s (each)", "last assignments"]
    header += ["SIGKILL at offsets", "busy before", "totals"]
    summary = {
        "median_records_per_s": rates,
        "ratio": ratio,
        "floor": FLOOR.value,
        "verdict": verdict,
        "error": rounds.error,
        "checks_ok": correct,
        "check": (
            "after every run the totals, the events and the stored offsets each add up to the "
            "records, over every key; with two, their last assignments split the partitions; "
            "with one killed, the survivor's totals are exact"
        ),
        "targets": [
            {
                "name": "records/s, 2 aggregators / 1",
                "figure": ratio,
                "limit": FLOOR.value,
                "floor": True,
                "unit": "x",
                "met": FLOOR.passes(ratio),
            }
        ],
    }
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**; the broker, PostgreSQL and every "
        "aggregator on these cores. "
        f"{meta['workload']['records']:,} records over {meta['workload']['keys']:,} keys, "
        f"{meta['workload']['partitions']} partitions, flush every "
        f"{meta['workload']['flush_interval_ms']} ms; each run timed from the first spawn to "
        "every offset stored in PostgreSQL.",
        "",
        h.table(header, rows),
        "",
        f"**Headline: 2 / 1 = {ratio:.2f}x ({FLOOR}): {verdict}**"
        + ("" if correct else " (a check failed: see the table)"),
        *h.error_lines(rounds.error),
    ]
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("scale_out", "Aggregators: one against two")
    endpoints = h.Endpoints.load()
    h.say(
        f"scale-out benchmark: {args.records:,} records, {args.keys:,} keys, "
        f"{args.partitions} partitions, {args.repeat} rounds; {endpoints.describe()}"
    )
    rounds: h.Rounds[Run] = h.Rounds()
    async with h.private_stack(endpoints, "bench.scale", args.partitions) as private:
        encoded = [encode_record(Increment(f"k{i}", 1)) for i in range(args.keys)]
        fill = await h.prefill(
            endpoints.kafka_bootstrap,
            private.topic,
            partitions=args.partitions,
            records=args.records,
            encoded=encoded,
            spread_ms=args.spread_ms,
        )
        b = Bench(
            args, private, sum(fill["end_offsets"].values()), args.partitions, session.log_dir
        )

        async def round_(index: int) -> AsyncIterator[Run]:
            for side in h.side_order(SIDES, index, alternate=True):
                yield await run_side(b, side, index)
            if index == 1:  # once: it checks, it does not time
                yield await run_side(b, KILLED, index)

        await rounds.play(args.repeat, round_)
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        workload={
            "records": args.records,
            "keys": args.keys,
            "partitions": args.partitions,
            "flush_interval_ms": args.flush_interval_ms,
            "spread_ms": args.spread_ms,
        },
        prefill=fill,
        logs=str(session.log_dir),
    )
    return report(session, meta, rounds)


def main() -> None:
    parser = h.parser(
        "One aggregator against two in one consumer group.",
        repeat=2,
        repeat_help="rounds (1 then 2, the order turning)",
    )
    h.add_prefill_options(parser, records=3_000_000, keys=100_000)
    parser.add_argument("--quick", action="store_true", help="500,000 records, 1 round")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    h.at_least(parser, args, 1, "--records", "--keys", "--repeat", "--partitions")
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
