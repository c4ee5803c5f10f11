"""Migrations against a real PostgreSQL: applied once each, atomically, and the services' role
granted what the services need and nothing that changes the schema."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from distcount_config import project_root
from distcount_store import (
    SERVICE_PRIVILEGES,
    Fenced,
    MigrationError,
    PartitionFlush,
    Written,
    connect,
    find_migrations,
    flush_partition,
    migrate,
    read_offsets,
    read_total,
)
from tests.conftest import Login
from tests.integration.conftest import clean_environ

pytestmark = pytest.mark.integration

ROOT = project_root()
assert ROOT is not None
MIGRATIONS = ROOT / "migrations"
TABLES = ("counter_events", "counter_totals", "consumer_offsets")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


async def _tables(database_url: str) -> set[str]:
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


async def test_migrations_create_the_schema_then_do_nothing(fresh_database: str) -> None:
    assert await _tables(fresh_database) == set()

    first = await migrate(fresh_database, find_migrations(MIGRATIONS))
    assert [m.version for m in first] == [m.version for m in find_migrations(MIGRATIONS)]
    assert set(TABLES) | {"schema_migrations"} <= await _tables(fresh_database)

    second = await migrate(fresh_database, find_migrations(MIGRATIONS))
    assert second == []
    conn = await connect(fresh_database)
    try:
        recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1",
            "consumer_offsets",
        )
    finally:
        await conn.close()
    assert recorded == len(first)
    assert {c["column_name"] for c in columns} >= {"group_id", "topic", "partition", "next_offset"}


async def test_two_migrating_processes_at_once_apply_each_file_once(fresh_database: str) -> None:
    env = clean_environ() | {"DISTCOUNT_DATABASE_URL": fresh_database}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distcount_cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    results = await asyncio.gather(asyncio.to_thread(run), asyncio.to_thread(run))

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    outputs = sorted(r.stdout.strip() for r in results)
    assert outputs[0] == "already up to date"
    assert outputs[1].startswith("applied 0001_initial")
    conn = await connect(fresh_database)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [v["version"] for v in versions] == [m.version for m in find_migrations(MIGRATIONS)]


async def test_a_failing_migration_is_rolled_back_and_named(
    fresh_database: str, tmp_path: Path
) -> None:
    shutil.copy(MIGRATIONS / "0001_initial.sql", tmp_path)
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nALTER TABLE no_such_table ADD COLUMN x int;\n"
    )

    with pytest.raises(MigrationError, match=r"0002_broken\.sql failed and was rolled back"):
        await migrate(fresh_database, find_migrations(tmp_path))

    tables = await _tables(fresh_database)
    assert "counter_totals" in tables  # 0001 committed before 0002 ran
    assert "half_done" not in tables


async def test_an_applied_migration_edited_later_is_refused(
    fresh_database: str, tmp_path: Path
) -> None:
    shutil.copy(MIGRATIONS / "0001_initial.sql", tmp_path)
    await migrate(fresh_database, find_migrations(tmp_path))
    with (tmp_path / "0001_initial.sql").open("a") as sql:
        sql.write("\n-- an edit\n")

    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await migrate(fresh_database, find_migrations(tmp_path))


# --- the services' role ---------------------------------------------------------------------


def _migrate_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distcount_cli", "migrate"],
        env=clean_environ() | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _needs_a_role(login: Login | None) -> Login:
    if login is None:
        pytest.skip("the admin role of these tests may not create the services' role")
    return login


async def _privileges(database_url: str, role: str) -> set[tuple[str, str]]:
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name, p FROM information_schema.tables, unnest($2::text[]) AS p "
            "WHERE table_schema = 'public' AND has_table_privilege($1, table_name, p)",
            role,
            list(PRIVILEGES),
        )
    finally:
        await conn.close()
    return {(row["table_name"], row["p"]) for row in rows}


def _expected() -> set[tuple[str, str]]:
    return {(table, p) for table, privileges in SERVICE_PRIVILEGES.items() for p in privileges}


async def test_migrate_grants_the_services_role_exactly_its_table_of_privileges(
    fresh_database: str, service_login: Login | None
) -> None:
    login = _needs_a_role(service_login)
    env = {
        "DISTCOUNT_DATABASE_URL": login.url(fresh_database),
        "DISTCOUNT_MIGRATE_DATABASE_URL": fresh_database,
    }

    first = _migrate_cli(env)
    assert first.returncode == 0, first.stderr
    assert f"granted role {login.user} what the services need" in first.stdout
    assert await _privileges(fresh_database, login.user) == _expected()

    again = _migrate_cli(env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "already up to date",
        f"granted role {login.user} what the services need",
    ]
    assert await _privileges(fresh_database, login.user) == _expected()


async def test_the_services_role_cannot_change_the_schema_yet_flushes_and_reads(
    fresh_database: str, service_login: Login | None
) -> None:
    login = _needs_a_role(service_login)
    await migrate(fresh_database, find_migrations(MIGRATIONS), grant_to=login.user)

    conn = await connect(login.url(fresh_database))
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = $1",
            login.user,
        )
        assert role is not None
        assert dict(role) == {"rolsuper": False, "rolcreatedb": False, "rolcreaterole": False}
        for statement in (
            "CREATE TABLE intruder (id int)",
            "DROP TABLE counter_totals",
            "ALTER TABLE counter_events ADD COLUMN x int",
            "TRUNCATE counter_events",
            "DELETE FROM counter_totals",
            "UPDATE counter_events SET delta = 0",
            "SELECT count(*) FROM schema_migrations",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)

        # the aggregator's flush, its first for the partition, then the next one
        first = PartitionFlush("g", "t", 0, None, 10, {60_000: {"a": 2, "b": 1}})
        assert await flush_partition(conn, first) == Written(2)
        # a sum past int64 takes the numeric statements
        wide = PartitionFlush("g", "t", 0, 10, 20, {120_000: {"a": 2**63 - 1, "c": 0}})
        assert await flush_partition(conn, wide) == Written(1)
        late = PartitionFlush("g", "t", 0, 10, 15, {60_000: {"a": 1}})
        assert await flush_partition(conn, late) == Fenced(20)
        assert await read_offsets(conn, "g", "t", [0, 1]) == {0: 20}
        total = await read_total(conn, "a")
        assert total is not None
        assert total.value == 2**63 + 1
    finally:
        await conn.close()


async def test_every_table_the_migrations_create_has_its_row_of_privileges(
    fresh_database: str,
) -> None:
    await migrate(fresh_database, find_migrations(MIGRATIONS))
    assert await _tables(fresh_database) - {"schema_migrations"} == set(SERVICE_PRIVILEGES)


async def test_a_services_role_that_does_not_exist_is_named(fresh_database: str) -> None:
    host = fresh_database.rpartition("@")[2]
    result = _migrate_cli(
        {
            "DISTCOUNT_DATABASE_URL": f"postgresql://no_such_role:pw@{host}",
            "DISTCOUNT_MIGRATE_DATABASE_URL": fresh_database,
        }
    )

    assert result.returncode == 1
    assert "the services' role 'no_such_role' does not exist: create it" in result.stderr
    # the migrations themselves went in: granting again is all that is left
    assert set(TABLES) <= await _tables(fresh_database)
