"""`distcount stalls` and `distcount skip`: what an operator does about a stalled partition."""

from __future__ import annotations

import sys

from distcount_config import Settings
from distcount_store import PartitionRef, SkipRefused, connect, read_stalls, skip_stalled


async def stalls(settings: Settings) -> int:
    """List the stalled partitions of every group and topic; exit status 3 when there are any."""
    conn = await connect(settings.database_url)
    try:
        found = await read_stalls(conn)
    finally:
        await conn.close()
    if not found:
        print("no stalled partitions: every partition is being counted")
        return 0
    for stall in found:
        print(f"group {stall.group_id}: {stall.describe()}")
    return 3


async def skip(settings: Settings, partition: int, to_offset: int, reason: str) -> int:
    ref = PartitionRef(settings.group_id, settings.topic, partition)
    conn = await connect(settings.database_url)
    try:
        from_offset = await skip_stalled(conn, ref, to_offset, reason)
    except SkipRefused as exc:
        print(f"distcount: skip refused: {exc}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    print(
        f"partition {partition} of {settings.topic} (group {settings.group_id}) moved from "
        f"offset {from_offset} to {to_offset}: {to_offset - from_offset} offsets will never be "
        "counted (recorded in skipped_ranges); the aggregator reads on from there within 30 s"
    )
    return 0
