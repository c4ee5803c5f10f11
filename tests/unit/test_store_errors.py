"""The store's one table of driver failures: what a retry may mend, and what it cannot."""

from __future__ import annotations

import asyncpg
import pytest

from distcount_core import DistcountError
from distcount_store import DatabaseUnavailable, QueryFailed, StoreError
from distcount_store._errors import mapped


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.PostgresConnectionError("connection lost"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InternalClientError("unexpected"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.InvalidCatalogNameError('database "distcount" does not exist'),
        asyncpg.InvalidPasswordError('password authentication failed for user "x"'),
    ],
)
def test_a_failure_of_the_connection_or_the_server_is_retriable(error: BaseException) -> None:
    with pytest.raises(DatabaseUnavailable) as caught, mapped("reading counter 'a'"):
        raise error
    assert caught.value.retriable
    assert caught.value.__cause__ is error
    assert str(caught.value).startswith("reading counter 'a': ")
    assert isinstance(caught.value, StoreError)
    assert isinstance(caught.value, DistcountError)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InsufficientPrivilegeError("permission denied for table counter_totals"),
        asyncpg.UndefinedTableError('relation "counter_totals" does not exist'),
        asyncpg.NumericValueOutOfRangeError("numeric field overflow"),
    ],
)
def test_a_statement_postgresql_refuses_is_not_retriable(error: BaseException) -> None:
    with pytest.raises(QueryFailed) as caught, mapped("flushing partition 3"):
        raise error
    assert not caught.value.retriable
    assert type(error).__name__ in str(caught.value)


def test_a_timeout_without_a_message_says_what_happened() -> None:
    with pytest.raises(DatabaseUnavailable, match="no answer in time"), mapped("checking"):
        raise TimeoutError


def test_what_is_not_the_driver_passes_through() -> None:
    with pytest.raises(KeyError), mapped("reading"):
        raise KeyError("a bug")
