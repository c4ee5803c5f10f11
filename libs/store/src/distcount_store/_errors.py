"""The store's exceptions, and the one table that maps the driver's onto them.

StoreError                   (a DistcountError)
 ├── DatabaseUnavailable     PostgreSQL did not answer, went away, or refused for a while:
 │                           retriable, the same call may succeed later
 ├── QueryFailed             PostgreSQL refused the statement (permissions, a missing table,
 │                           a broken constraint): not retriable, something must change first
 ├── MigrationError          a migration file is malformed, changed after it ran, or failed
 └── SkipRefused             `distcount skip` found nothing it may skip (see `_stalls`)

Every asyncpg call of the store runs inside `mapped(...)`, so no driver exception leaves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from distcount_core import DistcountError, describe


class StoreError(DistcountError):
    """Root of every error raised by distcount_store."""


class DatabaseUnavailable(StoreError):
    retriable = True


class QueryFailed(StoreError):
    pass


class MigrationError(StoreError):
    pass


# The driver's exceptions that mean "not now" rather than "not this": the connection or the
# server is the problem, and trying again (on a new connection) may work.
_RETRIABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # no answer in time (asyncio's and the driver's own timeouts)
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.InterfaceError,  # the connection was closed or is in a state it cannot be used in
    asyncpg.InternalClientError,  # a connection caught mid-operation by a server restart
    # class 57: shutting down or starting (CannotConnectNowError), cancelled by an operator
    asyncpg.OperatorInterventionError,
    asyncpg.TransactionRollbackError,  # class 40: deadlock, serialization failure
    # class 53: too many connections, out of disk or memory, for a while
    asyncpg.InsufficientResourcesError,
    # refused at connection time: a database not created yet, a role or password not set up
    # yet; an operator mends these without touching the service, which keeps trying
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


@contextmanager
def mapped(doing: str) -> Iterator[None]:
    """Raise the store's own error, saying what the store was `doing`, for a driver failure."""
    try:
        yield
    except _RETRIABLE as exc:
        raise DatabaseUnavailable(f"{doing}: {describe(exc)}") from exc
    except asyncpg.PostgresError as exc:
        raise QueryFailed(f"{doing}: {describe(exc)}") from exc
