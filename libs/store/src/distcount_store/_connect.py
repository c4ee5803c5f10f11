"""Connections, with driver and socket failures mapped to `DatabaseUnavailable`."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from distcount_store._errors import DatabaseUnavailable


def redact(database_url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def connect(database_url: str, timeout_s: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(database_url, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact(database_url)}: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc


async def create_pool(
    database_url: str,
    min_size: int = 1,
    max_size: int = 10,
    timeout_s: float = 10.0,
    command_timeout_s: float | None = None,
) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            command_timeout=command_timeout_s,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact(database_url)}: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    assert pool is not None
    return pool
