"""Counter totals read from PostgreSQL, every driver failure mapped to `DatabaseUnavailable`."""

from __future__ import annotations

import asyncio

import asyncpg

from distcount_store import DatabaseUnavailable, read_stalls, read_total

# How long a read may take before the answer is 503; a reader waits no longer than a writer.
DEFAULT_READ_TIMEOUT_S = 5.0

_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresTotals:
    """Reads `counter_totals` through a pool; the pool may be created before PostgreSQL is up."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        group_id: str,
        topic: str,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        self._pool = pool
        self._group_id = group_id
        self._topic = topic
        self._read_timeout_s = read_timeout_s

    async def read(self, key: str) -> int | None:
        """The key's total, None for a key never counted."""
        try:
            async with asyncio.timeout(self._read_timeout_s):
                total = await read_total(self._pool, key)  # maps the driver's failures itself
        except TimeoutError as exc:
            raise DatabaseUnavailable(f"reading a counter failed: {_describe(exc)}") from exc
        return None if total is None else total.value

    async def check(self, timeout_s: float) -> None:
        """Raise `DatabaseUnavailable` unless PostgreSQL answers `SELECT 1` within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._pool.fetchval("SELECT 1")
        except _FAILURES as exc:
            raise DatabaseUnavailable(_describe(exc)) from exc

    async def stalls(self, timeout_s: float) -> list[str]:
        """The aggregators' stalled partitions, described; `DatabaseUnavailable` on failure."""
        try:
            async with asyncio.timeout(timeout_s):
                stalls = await read_stalls(self._pool, self._group_id, self._topic)
        except _FAILURES as exc:
            raise DatabaseUnavailable(_describe(exc)) from exc
        return [stall.describe() for stall in stalls]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
