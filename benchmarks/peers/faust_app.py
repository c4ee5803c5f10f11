"""A peer of distcount's aggregator for benchmarks/fold_peers.py: an idiomatic faust-streaming
app doing the same job.

- an agent over the topic (JSON values `{"key": ..., "value": ...}`) adds each value to a
  `Table` of sums per counter key (the in-memory store, `memory://`: every update of the table
  is also sent to its changelog topic, as faust does for any table);
- a timer every `--flush-interval-s` upserts the sums that changed since the last tick into
  PostgreSQL (`<--table>(key text primary key, value numeric)`, one statement, one transaction,
  asyncpg on the same event loop);
- on uvloop (`mode.loop.use("uvloop")`, faust's `-L uvloop`), with faust's default processing
  guarantee, at-least-once: offsets are committed by faust on its own schedule, apart from the
  changelog and from PostgreSQL, so a crash replays records whose sums are already in the table's
  changelog (counted twice after recovery) or drops sums not yet flushed.

It speaks the protocol of benchmarks/harness/_consume.py on stdout: `assigned <partitions>`,
`progress <records>` every second, and `done <json>` after the first flush that committed the
sums of every record up to the end offsets it was given (its position in every partition has
reached them, and the flushed sums add up to `--expected`).

    python benchmarks/peers/faust_app.py --app-id ID --bootstrap HOST:PORT --topic T \
        --partitions 6 --end-offsets '{"0": 123, ...}' --expected N --database-url URL \
        --table faust_totals --data-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

import mode.loop

mode.loop.use("uvloop")  # before faust is imported, as faust's own `-L uvloop` does

import asyncpg  # noqa: E402
import faust  # noqa: E402

UPSERT = (
    "INSERT INTO {table} (key, value) SELECT * FROM unnest($1::text[], $2::numeric[]) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class Protocol:
    """The lines the benchmark reads, on the real stdout (faust's worker may redirect
    `sys.stdout` to its logger)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def build(args: argparse.Namespace, protocol: Protocol) -> faust.App:
    ends: dict[int, int] = {int(p): int(e) for p, e in json.loads(args.end_offsets).items()}
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        topic_partitions=args.partitions,
        datadir=args.data_dir,
        web_enabled=False,
        worker_redirect_stdouts=False,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
    )
    topic = app.topic(args.topic, value_serializer="json")
    sums = app.Table("sums", default=int, partitions=args.partitions)

    positions = dict.fromkeys(ends, 0)
    dirty: set[str] = set()
    flushed: dict[str, int] = {}
    state: dict[str, Any] = {
        "count": 0,
        "twice": 0,
        "flushed_total": 0,
        "flushes": 0,
        "assigned_at": None,
        "conn": None,
        "done": False,
    }
    statement = UPSERT.format(table=args.table)

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == args.topic)
        if mine and state["assigned_at"] is None:
            state["assigned_at"] = time.monotonic()
            protocol.say(f"assigned {mine}")

    @app.agent(topic)  # type: ignore[untyped-decorator]
    async def fold(stream: Any) -> None:
        async for event in stream.events():
            value = event.value
            key = value["key"]
            sums[key] += value["value"]
            dirty.add(key)
            message = event.message
            position = positions[message.partition]
            if message.offset < position:
                state["twice"] += 1
            positions[message.partition] = max(position, message.offset + 1)
            state["count"] += 1

    @app.timer(interval=args.flush_interval_s)  # type: ignore[untyped-decorator]
    async def flush() -> None:
        if state["done"]:
            return
        # a consistent snapshot: nothing else runs until the first await
        keys = list(dirty)
        dirty.clear()
        values = [sums[key] for key in keys]
        reached = dict(positions)
        if keys:
            if state["conn"] is None:
                state["conn"] = await asyncpg.connect(args.database_url, timeout=30)
            await state["conn"].execute(statement, keys, values)  # its own transaction
            state["flushes"] += 1
            for key, total in zip(keys, values, strict=True):
                state["flushed_total"] += total - flushed.get(key, 0)
                flushed[key] = total
        if (
            all(reached[p] >= end for p, end in ends.items())
            and state["flushed_total"] >= args.expected
        ):
            state["done"] = True
            finished = time.monotonic()
            assigned_at = state["assigned_at"]
            report = {
                "records": sum(reached.values()),
                "records_delivered": state["count"],
                "delivered_twice": state["twice"],
                "flushed_total": state["flushed_total"],
                "keys_flushed": len(flushed),
                "flushes": state["flushes"],
                "seconds_from_first_assignment": (
                    finished - assigned_at if assigned_at is not None else None
                ),
                "cpu_seconds": time.process_time(),
            }
            protocol.say(f"done {json.dumps(report)}")

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def progress() -> None:
        if not state["done"]:
            protocol.say(f"progress {state['count']}")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--app-id", required=True, help="faust's app id, also its consumer group")
    add("--bootstrap", required=True)
    add("--topic", required=True)
    add("--partitions", type=int, required=True)
    add("--end-offsets", required=True, help='{"partition": end offset, ...}, JSON')
    add("--expected", type=int, required=True, help="the sum of every record's value")
    add(
        "--database-url",
        default=os.environ.get("PEER_DATABASE_URL"),
        help="PostgreSQL, by default from $PEER_DATABASE_URL (kept out of the process list)",
    )
    add("--table", required=True, help="an existing table (key text primary key, value numeric)")
    add("--flush-interval-s", type=float, default=1.0)
    add("--data-dir", required=True, help="faust's datadir (left empty by the memory store)")
    add("--loglevel", default="warning")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url or $PEER_DATABASE_URL is needed")
    protocol = Protocol(sys.stdout)
    app = build(args, protocol)
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.spinner = None  # it writes terminal escapes to stdout at warning level and above
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
