"""Connections to PostgreSQL: one for a command, or a pool for a service (`Database`).

Opening maps every failure to the store's errors; so do the methods of `Database`, which are
all a service needs: nothing outside this package touches the driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from distcount_store._counters import (
    Fenced,
    PartitionFlush,
    Total,
    Written,
    flush_partition,
    read_offsets,
    read_total,
)
from distcount_store._errors import mapped
from distcount_store._ids import forget_ids
from distcount_store._reads import (
    Flushed,
    HistoryQuery,
    list_totals,
    read_flushed,
    read_history,
    top_counters,
)
from distcount_store._stalls import PartitionRef, Stall, read_stalls, record_stall

T = TypeVar("T")


Connection = asyncpg.Connection


# what libpq (and asyncpg) read from a URL's query string that is a password
_QUERY_SECRETS = ("password", "sslpassword")


def redact(database_url: str) -> str:
    """The URL without its passwords (its user's, and any in its query string, where libpq
    takes them too), fit for messages and logs; TLS options such as sslmode stay."""
    parts = urlsplit(database_url)
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        parts = parts._replace(netloc=netloc)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name.lower() in _QUERY_SECRETS for name, _ in query):
        hidden = [(n, "***" if n.lower() in _QUERY_SECRETS else v) for n, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="/*:"))
    return urlunsplit(parts)


async def connect(database_url: str, timeout_s: float = 10.0) -> Connection:
    """One connection, for a command or a test; the caller closes it."""
    with mapped(f"cannot connect to PostgreSQL at {redact(database_url)}"):
        return await asyncpg.connect(database_url, timeout=timeout_s)


class Database:
    """A service's pool of connections, and what the services do with it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float | None = None,
    ) -> Database:
        """A pool; with `min_size=0` it opens even while PostgreSQL is down (connections are
        made on first use). `command_timeout_s` bounds every statement: a flush stuck on a
        half-open connection fails and is retried instead of hanging."""
        with mapped(f"cannot connect to PostgreSQL at {redact(database_url)}"):
            pool = await asyncpg.create_pool(
                database_url,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
                # every query here is short: compiling one would cost more than it saves
                server_settings={"jit": "off"},
            )
        assert pool is not None
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def check(self, timeout_s: float) -> None:
        """Return once PostgreSQL answers a query; `DatabaseUnavailable` past `timeout_s`."""
        await self._bounded(
            "PostgreSQL does not answer", timeout_s, self._pool.fetchval, "SELECT 1"
        )

    async def flush(self, flush: PartitionFlush) -> Fenced | Written:
        """`flush_partition` on a connection of the pool; a connection that failed is closed,
        whatever state the failure left it in, and the pool opens a new one."""
        with mapped(f"flushing partition {flush.partition}"):
            async with self._pool.acquire() as conn:
                try:
                    return await flush_partition(conn, flush)
                except BaseException:
                    conn.terminate()
                    raise

    async def forget_ids(self, window_s: int) -> int:
        """Delete a chunk of the idempotency ids older than the window; how many went."""
        with mapped("deleting expired idempotency ids"):
            async with self._pool.acquire() as conn:
                return await forget_ids(conn, window_s)

    async def read_offsets(
        self, group_id: str, topic: str, partitions: list[int]
    ) -> dict[int, int]:
        with mapped(f"reading the stored offsets of {topic}"):
            async with self._pool.acquire() as conn:
                return await read_offsets(conn, group_id, topic, partitions)

    async def read_total(self, key: str, timeout_s: float) -> Total | None:
        return await self._bounded(
            f"reading counter {key!r}", timeout_s, read_total, self._pool, key
        )

    async def record_stall(self, ref: PartitionRef, offset: int, reason: str) -> None:
        with mapped(f"storing the stall of partition {ref.partition}"):
            await record_stall(self._pool, ref, offset, reason)

    async def read_stalls(self, group_id: str, topic: str, timeout_s: float) -> list[Stall]:
        return await self._bounded(
            "reading the stalled partitions", timeout_s, read_stalls, self._pool, group_id, topic
        )

    async def read_flushed(self, group_id: str, topic: str, timeout_s: float) -> Flushed:
        doing = f"reading what is flushed of {topic}"
        return await self._bounded(doing, timeout_s, read_flushed, self._pool, group_id, topic)

    async def read_history(self, query: HistoryQuery, timeout_s: float) -> dict[int, int]:
        doing = f"reading the history of {query.key!r}"
        return await self._bounded(doing, timeout_s, read_history, self._pool, query)

    async def list_totals(
        self, prefix: str, after: str, limit: int, timeout_s: float
    ) -> list[tuple[str, int]]:
        return await self._bounded(
            "listing counters", timeout_s, list_totals, self._pool, prefix, after, limit
        )

    async def top_counters(
        self, since: datetime, until: datetime, limit: int, timeout_s: float
    ) -> list[tuple[str, int]]:
        doing = "reading the busiest counters"
        return await self._bounded(doing, timeout_s, top_counters, self._pool, since, until, limit)

    async def _select_1(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def _bounded(
        self, doing: str, timeout_s: float, call: Callable[..., Awaitable[T]], *args: object
    ) -> T:
        with mapped(doing):
            async with asyncio.timeout(timeout_s):
                return await call(*args)
