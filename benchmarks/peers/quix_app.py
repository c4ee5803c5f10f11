"""A peer of distcount's aggregator for benchmarks/fold_peers.py: an idiomatic Quix Streams app
doing the same job.

- `Application(...).dataframe(topic)` over the topic (JSON values `{"key": ..., "value": ...}`);
  the message key is already the counter key, so the state of `.apply(..., stateful=True)`
  is already per counter key; `--group-by` adds `.group_by("key")` all the same (a repartition
  topic: every record is produced once more and read back);
- a stateful running sum per key (the default RocksDB store, with its changelog topic), each
  record giving `{"key": key, "value": sum so far}`;
- Quix's own `PostgreSQLSink` (`quixstreams[postgresql]`, psycopg2) upserting on the primary key
  `key` into an existing table `<--table>(key text primary key, value numeric)`
  (`schema_auto_update=False`, no metadata columns): at every checkpoint (`commit_interval`)
  each partition's batch is deduplicated by key and written in a transaction of its own, before
  the changelog is flushed and the offsets are committed;
- `--processing-guarantee` `at-least-once` (Quix's default: a crash between the sink's write and
  the offsets' commit replays records, and the state's changelog and the offsets are not
  committed atomically) or `exactly-once` (the changelog and the offsets in one Kafka
  transaction; the sink is outside it, but since it upserts sums computed from the committed
  state, a replay rewrites the same values).

It speaks the protocol of benchmarks/harness/_consume.py on stdout: `assigned <partitions>`,
`progress <records>` about every second, and `done <json>` after the sink's write that
committed the sums of every record up to the end offsets it was given (its position in every
partition has reached them, and the written sums add up to `--expected`).

    python benchmarks/peers/quix_app.py --group G --bootstrap HOST:PORT --topic T \
        --end-offsets '{"0": 123, ...}' --expected N --database-url URL --table quix_totals \
        --state-dir DIR [--processing-guarantee exactly-once] [--group-by]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from quixstreams import Application, State
from quixstreams.sinks import SinkBatch
from quixstreams.sinks.community.postgresql import PostgreSQLSink


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Tracker:
    """Where the app has got to: positions in the source topic (from `on_message_processed`),
    and the sums the sink has committed to PostgreSQL."""

    def __init__(self, topic: str, ends: dict[int, int], expected: int) -> None:
        self.topic = topic
        self.ends = ends
        self.expected = expected
        self.positions = dict.fromkeys(ends, 0)
        self.count = 0
        self.twice = 0
        self.flushed: dict[str, int] = {}
        self.flushed_total = 0
        self.writes = 0
        self.assigned_at: float | None = None
        self.done = False
        self._next_progress = time.monotonic() + 1.0

    def processed(self, topic: str, partition: int, offset: int) -> None:
        if topic != self.topic:  # a repartition topic's record (--group-by)
            return
        position = self.positions[partition]
        if offset < position:
            self.twice += 1
        else:
            self.positions[partition] = offset + 1
        self.count += 1
        if not self.count % 10_000 and time.monotonic() >= self._next_progress:
            say(f"progress {self.count}")
            self._next_progress = time.monotonic() + 1.0

    def written(self, batch: SinkBatch) -> None:
        latest: dict[str, int] = {}
        for item in batch:
            latest[item.value["key"]] = item.value["value"]
        for key, total in latest.items():
            self.flushed_total += total - self.flushed.get(key, 0)
            self.flushed[key] = total
        self.writes += 1
        if self.done or self.flushed_total < self.expected:
            return
        if all(self.positions[p] >= end for p, end in self.ends.items()):
            self.done = True
            finished = time.monotonic()
            report = {
                "records": sum(self.positions.values()),
                "records_delivered": self.count,
                "delivered_twice": self.twice,
                "flushed_total": self.flushed_total,
                "keys_flushed": len(self.flushed),
                "sink_writes": self.writes,
                "seconds_from_first_assignment": (
                    finished - self.assigned_at if self.assigned_at is not None else None
                ),
                "cpu_seconds": time.process_time(),
            }
            say(f"done {json.dumps(report)}")


class TrackedPostgreSQLSink(PostgreSQLSink):  # type: ignore[misc] # see pyproject
    """Quix's PostgreSQL sink, telling the tracker what each committed write held."""

    def __init__(self, tracker: Tracker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracker = tracker

    def write(self, batch: SinkBatch) -> None:
        super().write(batch)  # its own transaction, committed on return
        self.tracker.written(batch)


class AnnouncingApplication(Application):  # type: ignore[misc] # see pyproject
    """`Application`, printing `assigned <partitions>` on the first assignment (Quix has no
    public hook for it; `_on_assign` is the consumer's on_assign callback)."""

    tracker: Tracker

    def _on_assign(self, _: Any, topic_partitions: list[Any]) -> None:
        super()._on_assign(_, topic_partitions)
        mine = sorted(tp.partition for tp in topic_partitions if tp.topic == self.tracker.topic)
        if mine and self.tracker.assigned_at is None:
            self.tracker.assigned_at = time.monotonic()
            say(f"assigned {mine}")


def add(value: dict[str, Any], state: State[str, int]) -> dict[str, Any]:
    total: int = state.get("sum", 0) + value["value"]
    state.set("sum", total)
    return {"key": value["key"], "value": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    arg = parser.add_argument
    arg("--group", required=True, help="the consumer group (and the prefix of Quix's topics)")
    arg("--bootstrap", required=True)
    arg("--topic", required=True)
    arg("--end-offsets", required=True, help='{"partition": end offset, ...}, JSON')
    arg("--expected", type=int, required=True, help="the sum of every record's value")
    arg(
        "--database-url",
        default=os.environ.get("PEER_DATABASE_URL"),
        help="PostgreSQL, by default from $PEER_DATABASE_URL (kept out of the process list)",
    )
    arg("--table", required=True, help="an existing table (key text primary key, value numeric)")
    arg("--commit-interval-s", type=float, default=1.0, help="Quix's commit_interval")
    arg(
        "--processing-guarantee",
        choices=("at-least-once", "exactly-once"),
        default="at-least-once",
    )
    arg("--group-by", action="store_true", help='add .group_by("key") (a repartition topic)')
    arg("--state-dir", required=True)
    arg("--loglevel", default="INFO")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url or $PEER_DATABASE_URL is needed")

    ends = {int(p): int(e) for p, e in json.loads(args.end_offsets).items()}
    tracker = Tracker(args.topic, ends, args.expected)
    app = AnnouncingApplication(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval_s,
        state_dir=args.state_dir,
        processing_guarantee=args.processing_guarantee,
        on_message_processed=tracker.processed,
        loglevel=args.loglevel,
    )
    app.tracker = tracker
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
    sdf = app.dataframe(topic)
    if args.group_by:
        sdf = sdf.group_by("key")
    sdf = sdf.apply(add, stateful=True)
    url = urlsplit(args.database_url)
    sdf.sink(
        TrackedPostgreSQLSink(
            tracker,
            host=url.hostname or "127.0.0.1",
            port=url.port or 5432,
            dbname=url.path.lstrip("/"),
            user=unquote(url.username or ""),
            password=unquote(url.password or ""),
            table_name=args.table,
            schema_auto_update=False,
            primary_key_columns="key",
            upsert_on_primary_key=True,
            include_metadata=False,
        )
    )
    app.run()


if __name__ == "__main__":
    main()
