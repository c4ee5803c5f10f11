"""Fakes of what the ingress app is built around: a publisher and a reader of totals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import httpx

from distcount_ingress import Unavailable
from distcount_store import Flushed, HistoryQuery, StoreError

MAX_BODY_BYTES = 1024


class FakePublisher:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.batches: list[list[tuple[bytes, bytes]]] = []
        self.failure: Unavailable | None = None
        self.check_failure: Exception | None = None
        self.partitions: int | None = 2

    async def publish(self, key: bytes, value: bytes) -> tuple[int, int]:
        """Every record to partition 0, at the next offset."""
        if self.failure is not None:
            raise self.failure
        self.records.append((key, value))
        return 0, len(self.records) - 1

    async def publish_batch(self, records: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
        """A batch to partition 1, at the next offsets."""
        if self.failure is not None:
            raise self.failure
        self.batches.append(list(records))
        return {1: sum(len(batch) for batch in self.batches) - 1}

    async def partition_count(self) -> int | None:
        return self.partitions

    async def check(self, timeout_s: float) -> None:
        if self.check_failure is not None:
            raise self.check_failure


class FakeCounters:
    """The reads over in-memory data: totals, flushed offsets, and events for history and top."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.failure: StoreError | None = None
        self.stalled: list[str] = []
        # what the aggregators have flushed: (next offset, as_of) per partition
        self.offsets: dict[int, int] = {}
        self.as_of: dict[int, datetime | None] = {}
        self.events: dict[str, dict[int, int]] = {}  # key -> bucket start ms -> delta

    async def read(self, key: str) -> int | None:
        if self.failure is not None:
            raise self.failure
        return self.totals.get(key)

    async def check(self, timeout_s: float) -> None:
        if self.failure is not None:
            raise self.failure

    async def stalls(self, timeout_s: float) -> list[str]:
        if self.failure is not None:
            raise self.failure
        return self.stalled

    async def flushed(self, timeout_s: float) -> Flushed:
        if self.failure is not None:
            raise self.failure
        return Flushed(dict(self.offsets), dict(self.as_of))

    async def history(self, query: HistoryQuery, timeout_s: float) -> dict[int, int]:
        if self.failure is not None:
            raise self.failure
        sums: dict[int, int] = {}
        end_ms = int(query.end.timestamp() * 1000)
        for start_ms, delta in self.events.get(query.key, {}).items():
            if query.start_ms <= start_ms < end_ms:
                step = (start_ms - query.start_ms) // query.step_ms
                sums[step] = sums.get(step, 0) + delta
        return sums

    async def listing(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
        keys = sorted(
            (k for k in self.totals if k.startswith(prefix) and k.encode() > after.encode()),
            key=str.encode,
        )
        return [(k, self.totals[k]) for k in keys[:limit]]

    async def top(self, since: datetime, until: datetime, limit: int) -> list[tuple[str, int]]:
        lo, hi = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
        sums = {
            key: sum(d for t, d in buckets.items() if lo <= t < hi)
            for key, buckets in self.events.items()
        }
        ranked = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0].encode()))
        return [(k, v) for k, v in ranked if v][:limit]


async def post(
    client: httpx.AsyncClient, path: str, body: bytes, content_type: str | None
) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    return await client.post(path, content=body, headers=headers)


JSON = "application/json"
