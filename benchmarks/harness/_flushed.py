"""What the benchmarks that time `distcount aggregator` over a pre-filled topic share: their
workload options, and the wait until PostgreSQL holds every offset of the topic."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Final

import asyncpg

from harness._console import Progress
from harness._process import Child

# the offsets PostgreSQL holds for one group on one topic, summed
STORED_OFFSETS: Final = (
    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1 AND topic = $2"
)
POLL_S: Final = 0.1


def add_prefill_options(parser: argparse.ArgumentParser, *, records: int, keys: int) -> None:
    """--records, --keys, --partitions, --flush-interval-ms, --spread-ms and --timeout-s."""
    add = parser.add_argument
    add("--records", type=int, default=records, help="records to pre-fill")
    add("--keys", type=int, default=keys, help="distinct counter keys")
    add("--partitions", type=int, default=6, help="partitions of the topic")
    add("--flush-interval-ms", type=int, default=1000, help="DISTCOUNT_FLUSH_INTERVAL_MS")
    add("--spread-ms", type=int, default=5000, help="record timestamps spread over this many ms")
    add("--timeout-s", type=float, default=600.0, help="give up on one run after this long")


async def wait_until_flushed(
    conn: asyncpg.Connection,
    child: Child,
    *,
    label: str,
    group: str,
    topic: str,
    expected: int,
    timeout_s: float,
) -> tuple[float, float | None]:
    """(time.monotonic() when PostgreSQL held `expected` offsets of `topic` for `group`, the
    child's CPU seconds then), polled every POLL_S; raises if the child exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    progress = Progress(label, expected, "offsets flushed to PostgreSQL")
    while True:
        flushed = await conn.fetchval(STORED_OFFSETS, group, topic)
        now = time.monotonic()
        if flushed >= expected:
            return now, child.cpu_seconds()
        if not child.running():
            raise child.exited()
        if now > deadline:
            raise TimeoutError(f"the aggregator flushed {flushed} of {expected} in time")
        progress.update(int(flushed))
        await asyncio.sleep(POLL_S)
