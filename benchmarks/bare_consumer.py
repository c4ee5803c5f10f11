"""The baseline of benchmarks/aggregator.py: a bare aiokafka `getmany` loop that orjson-decodes
every record value and discards it. Started by aggregator.py as a child process, like the real
aggregator, so that both are timed the same way (from process spawn).

It takes the consumer's keyword arguments as JSON (aggregator.py copies them from
distcount_aggregator.consumer_options), runs on uvloop as the aggregator does, and imports nothing
of distcount, so its start-up is the least a Python consumer pays.

It is done when its position in every partition has reached the end offset it was given (not
when it has counted N records: a consumer may be handed a record twice, and the aggregator's
first start is; see benchmarks/README.md). Records handed twice are counted and reported.

Output lines (stdout): `assigned <partitions>`, `progress <count>`, and `done <json>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition


class _Announce(ConsumerRebalanceListener):  # type: ignore[misc] # aiokafka has no type hints
    def __init__(self) -> None:
        self.first_assignment: float | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.first_assignment is None:
            self.first_assignment = time.monotonic()
        print(f"assigned {sorted(tp.partition for tp in assigned)}", flush=True)


async def consume(
    topic: str,
    options: dict[str, Any],
    ends: dict[int, int],
    max_records: int,
    timeout_s: float,
) -> dict[str, Any]:
    started = time.monotonic()
    cpu_started = time.process_time()
    listener = _Announce()
    consumer = AIOKafkaConsumer(**options)
    consumer.subscribe([topic], listener=listener)
    await consumer.start()
    positions = dict.fromkeys(ends, 0)
    behind = {p for p, end in ends.items() if end > 0}
    count = 0
    duplicates = 0
    first_record_at: float | None = None
    next_progress = time.monotonic() + 1.0
    deadline = started + timeout_s
    loads = orjson.loads
    try:
        while behind:
            if time.monotonic() > deadline:
                raise TimeoutError(f"partitions {sorted(behind)} not read in {timeout_s:.0f} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
            for tp, records in batches.items():
                if not records:
                    continue
                if first_record_at is None:
                    first_record_at = time.monotonic()
                for record in records:
                    loads(record.value)
                count += len(records)
                position = positions[tp.partition]
                if records[0].offset < position:
                    duplicates += sum(1 for r in records if r.offset < position)
                positions[tp.partition] = max(position, records[-1].offset + 1)
                if positions[tp.partition] >= ends[tp.partition]:
                    behind.discard(tp.partition)
            if time.monotonic() >= next_progress:
                print(f"progress {count}", flush=True)
                next_progress = time.monotonic() + 1.0
        finished = time.monotonic()
        result = {
            "records": sum(positions.values()),
            "records_delivered": count,
            "delivered_twice": duplicates,
            "seconds_from_consumer_creation": finished - started,
            "seconds_from_first_assignment": (
                finished - listener.first_assignment if listener.first_assignment else None
            ),
            "seconds_from_first_record": finished - first_record_at if first_record_at else None,
            "cpu_seconds": time.process_time() - cpu_started,
        }
        # printed before the consumer leaves its group: leaving is not part of reading
        print(f"done {json.dumps(result)}", flush=True)
        return result
    finally:
        await asyncio.wait_for(consumer.stop(), 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--options", required=True, help="AIOKafkaConsumer keyword args, JSON")
    parser.add_argument(
        "--end-offsets", required=True, help='{"partition": end offset, ...} to read up to, JSON'
    )
    parser.add_argument("--max-records", type=int, required=True, help="getmany max_records")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    options = json.loads(args.options)
    ends = {int(p): int(end) for p, end in json.loads(args.end_offsets).items()}
    uvloop.run(consume(args.topic, options, ends, args.max_records, args.timeout_s))


if __name__ == "__main__":
    main()
