"""What the services may do in the database: one table, granted by `migrate` to their role.

The services log in as a role that owns nothing, so it cannot create, alter, drop or truncate
tables whatever the code running as it does; the migrations run as the schema's owner, which
grants that role the privileges below and nothing else. Each row answers to the statements of
`_counters.py` and `_stalls.py`; a statement that needs more fails with "permission denied" in
the integration tests, which run the services as such a role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

import asyncpg

from distcount_store._errors import MigrationError, QueryFailed, mapped

# table -> privileges. The identity columns (counter_events.id, skipped_ranges.id) need no
# grant on their sequences: PostgreSQL draws identity values for whoever may INSERT; a `serial`
# column would need USAGE on its sequence.
SERVICE_PRIVILEGES: Final[Mapping[str, tuple[str, ...]]] = {
    # the flush appends to the log; history and top read it; compaction merges old rows
    "counter_events": ("SELECT", "INSERT", "DELETE"),
    # the widths rollup has written: rollup adds to it, reads walk it
    "counter_widths": ("SELECT", "INSERT"),
    # the flush upserts (ON CONFLICT DO UPDATE reads the old value); GET /counters reads
    "counter_totals": ("SELECT", "INSERT", "UPDATE"),
    # read on assignment; the flush locks the row (FOR UPDATE), inserts or advances it
    "consumer_offsets": ("SELECT", "INSERT", "UPDATE"),
    # recorded and read by the aggregator, deleted by the flush that passes it, locked by a skip
    "partition_stalls": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    # a skip leaves its trace
    "skipped_ranges": ("INSERT",),
    # the flush claims ids (an expired one is claimed again by UPDATE) and compares digests;
    # the aggregators delete the expired ones
    "counter_ids": ("SELECT", "INSERT", "UPDATE", "DELETE"),
}


def service_role(database_url: str, migrate_database_url: str) -> str | None:
    """The role to grant: the user the services log in as (the user of `database_url`), unless
    the migrations log in as that same user (one role for everything, as before the split) or
    the URL names none."""
    service_user = _user(database_url)
    if service_user is None or service_user == _user(migrate_database_url):
        return None
    return service_user


def _user(database_url: str) -> str | None:
    user = urlsplit(database_url).username
    return unquote(user) if user else None


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def grant_service_privileges(conn: asyncpg.Connection, role: str) -> None:
    """Grant `role` what the services need, in one transaction; granting again changes nothing.

    Nothing is revoked: a role that owns the tables (the services' role of a database migrated
    before the split) would lose its own privileges.
    """
    try:
        with mapped(f"granting the services' role {role!r} its privileges"):
            async with conn.transaction():
                for table, privileges in SERVICE_PRIVILEGES.items():
                    await conn.execute(
                        f"GRANT {', '.join(privileges)} ON TABLE {_quoted(table)} "
                        f"TO {_quoted(role)}"
                    )
    except QueryFailed as exc:
        if isinstance(exc.__cause__, asyncpg.UndefinedObjectError):
            raise MigrationError(
                f"the services' role {role!r} does not exist: create it (CREATE ROLE "
                f"{_quoted(role)} LOGIN PASSWORD '…'), then migrate again to grant it what the "
                "services need"
            ) from exc
        raise MigrationError(str(exc)) from exc
