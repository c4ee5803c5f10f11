from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distcount_config import project_root
from distcount_store import MigrationError, connect, find_migrations, migrate
from tests.integration.conftest import clean_environ

pytestmark = pytest.mark.integration

ROOT = project_root()
assert ROOT is not None
MIGRATIONS = ROOT / "migrations"
TABLES = ("counter_events", "counter_totals", "consumer_offsets")


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
