"""Applies the plain-SQL files of `migrations/` in order, each once, each in its own transaction.

The files ship inside this package (`distcount_store/migrations` is a link to the repository's
`migrations/`, which the wheel build follows), so an installed service finds them wherever it
runs; a folder of one's own may be given instead.

Applied files are recorded in `schema_migrations` with a checksum, so a file edited after it ran
is reported rather than silently skipped. A session-level advisory lock serialises concurrent
migrators (several services starting at once): the second one waits, then finds nothing to do.
Then the services' role, when it is not the migrating one, is granted what the services need
(`_grants.py`), under the same lock: two GRANTs on one table at once can fail.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final

import asyncpg

from distcount_store._database import connect
from distcount_store._errors import MigrationError, QueryFailed, mapped
from distcount_store._grants import grant_service_privileges

# Any constant will do, as long as nothing else in the database uses it for another purpose.
MIGRATION_LOCK_KEY: Final = 0x64697374636E74  # "distcnt"

_NAME_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped_migrations() -> Traversable:
    """The folder of migrations installed with this package."""
    return files("distcount_store") / "migrations"


def find_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The `.sql` files of `directory` (by default, those shipped with this package), in order;
    other files there are ignored."""
    if directory is None:
        directory = shipped_migrations()
        if not directory.is_dir():
            raise MigrationError(
                f"the migrations shipped with distcount-store are missing ({directory}): "
                "reinstall distcount-store, or set DISTCOUNT_MIGRATIONS_DIR to a folder of them"
            )
    if not directory.is_dir():
        raise MigrationError(f"migrations folder {directory} does not exist")
    found: dict[str, Migration] = {}
    for path in sorted(directory.iterdir(), key=lambda entry: entry.name):
        if not path.name.lower().endswith(".sql") or not path.is_file():
            continue
        match = _NAME_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_name.sql")
        version = match["version"]
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match["name"], path.read_text(encoding="utf-8"))
    if not found:
        raise MigrationError(f"no migration files in {directory}")
    return [found[v] for v in sorted(found)]


async def applied_migrations(conn: asyncpg.Connection) -> dict[str, str]:
    """version -> checksum of what this database has applied."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def migrate(
    database_url: str, migrations: Sequence[Migration], grant_to: str | None = None
) -> list[Migration]:
    """Apply what is missing, then grant role `grant_to` (if any) the services' privileges;
    returns the migrations this call applied (empty when up to date)."""
    conn = await connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(_CREATE_TABLE)
            done = await applied_migrations(conn)
            _check_unchanged(migrations, done)
            applied: list[Migration] = []
            for migration in migrations:
                if migration.version in done:
                    continue
                await _apply(conn, migration)
                applied.append(migration)
            if grant_to is not None:
                await grant_service_privileges(conn, grant_to)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


def _check_unchanged(migrations: Sequence[Migration], done: dict[str, str]) -> None:
    for migration in migrations:
        checksum = done.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.version}_{migration.name}.sql was changed after it was "
                "applied; add a new migration instead of editing an old one"
            )


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    name = f"{migration.version}_{migration.name}.sql"
    try:
        with mapped(f"migration {name} failed and was rolled back"):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
    except QueryFailed as exc:  # the SQL is at fault, not the connection
        raise MigrationError(str(exc)) from exc
