"""What the ingress reads from PostgreSQL: totals, whether it answers, and what stops counting."""

from __future__ import annotations

from datetime import datetime

from distcount_store import Database, Flushed, HistoryQuery

# How long a read may take before the answer is 503; a reader waits no longer than a writer.
DEFAULT_READ_TIMEOUT_S = 5.0


class PostgresTotals:
    """The `CounterReader` of the app, over the store; every failure is a `StoreError`."""

    def __init__(
        self,
        database: Database,
        group_id: str,
        topic: str,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self._database = database
        self._group_id = group_id
        self._topic = topic
        self._read_timeout_s = read_timeout_s

    async def read(self, key: str) -> int | None:
        """The key's total, None for a key never counted."""
        total = await self._database.read_total(key, self._read_timeout_s)
        return None if total is None else total.value

    async def check(self, timeout_s: float) -> None:
        await self._database.check(timeout_s)

    async def stalls(self, timeout_s: float) -> list[str]:
        """The aggregators' stalled partitions, described."""
        stalls = await self._database.read_stalls(self._group_id, self._topic, timeout_s)
        return [stall.describe() for stall in stalls]

    async def flushed(self, timeout_s: float) -> Flushed:
        return await self._database.read_flushed(self._group_id, self._topic, timeout_s)

    async def history(self, query: HistoryQuery, timeout_s: float) -> dict[int, int]:
        return await self._database.read_history(query, timeout_s)

    async def listing(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
        return await self._database.list_totals(prefix, after, limit, self._read_timeout_s)

    async def top(self, since: datetime, until: datetime, limit: int) -> list[tuple[str, int]]:
        return await self._database.top_counters(since, until, limit, self._read_timeout_s)
