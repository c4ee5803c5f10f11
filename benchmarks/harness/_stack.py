"""Where Kafka and PostgreSQL are, and a private, migrated database per run.

Endpoints come from `distcount_config.load()`: the services' URL, the migrations' URL (the
schema's owner) and the broker. Every run creates its own database as the owner, migrates it,
grants the services' role what the services need, and drops the database at the end: the dev
data is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from distcount_config import load
from distcount_store import find_migrations, migrate, redact, service_role
from harness._console import say
from harness._process import ROOT

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    database_url: str = field(repr=False)  # as the services log in
    migrate_database_url: str = field(repr=False)  # as the schema's owner: CREATE DATABASE
    migrations_dir: Path

    @classmethod
    def load(cls) -> Endpoints:
        """The stack's endpoints; refuses any that is not on this machine."""
        settings = load()
        endpoints = cls(
            settings.kafka_bootstrap,
            settings.database_url,
            settings.migrate_database_url,
            ROOT / "migrations",
        )
        hosts = [s.rsplit(":", 1)[0].strip("[]") for s in endpoints.kafka_bootstrap.split(",")]
        hosts += [urlsplit(endpoints.database_url).hostname or ""]
        hosts += [urlsplit(endpoints.migrate_database_url).hostname or ""]
        for host in hosts:
            if host not in _LOOPBACK:
                raise SystemExit(
                    f"refusing to benchmark against {host!r}: benchmarks send traffic to this "
                    "machine only (127.0.0.1)"
                )
        return endpoints

    def describe(self) -> str:
        return f"Kafka {self.kafka_bootstrap}, PostgreSQL {redact(self.database_url)}"


@dataclass(frozen=True)
class Database:
    name: str
    url: str = field(repr=False)  # as the services log in: give it to the services
    owner_url: str = field(repr=False)  # as its owner: the benchmark's own checks and clean-up
    services_role: str | None  # the role granted; None: one role for everything


def _on(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def suffix() -> str:
    """A short random suffix for names that must not collide with another run's."""
    return secrets.token_hex(4)


@contextlib.asynccontextmanager
async def fresh_database(endpoints: Endpoints, prefix: str = "bench") -> AsyncIterator[Database]:
    """CREATE DATABASE <prefix>_<random> as the owner, migrated (granting the services' role);
    dropped (WITH FORCE) on the way out.

    Each statement gets a connection of its own: one held open through a long run may be gone
    by its end (a PostgreSQL restart), and the database must be dropped all the same."""
    name = f"{prefix}_{suffix()}"
    owner = endpoints.migrate_database_url
    try:
        await _as_owner(owner, f'CREATE DATABASE "{name}"')
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise SystemExit(
            f"cannot log in as the migrations' role ({redact(owner)}): {exc}. For the local "
            'stack, `eval "$(uv run distcount dev status --env)"` sets both URLs as it runs '
            "them (a state folder made before the roles were split has one role for both)"
        ) from exc
    try:
        role = service_role(endpoints.database_url, owner)
        applied = await migrate(
            _on(owner, name), find_migrations(endpoints.migrations_dir), grant_to=role
        )
        granted = f", role {role} granted" if role else ", one role for everything"
        say(f"created database {name} ({len(applied)} migrations applied{granted})")
        yield Database(name, _on(endpoints.database_url, name), _on(owner, name), role)
    finally:
        for attempt in range(1, 6):
            try:
                await _as_owner(owner, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                say(f"dropped database {name}")
                break
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                say(f"could not drop database {name} (attempt {attempt}/5): {exc}")
                await asyncio.sleep(2.0)


async def _as_owner(owner_url: str, statement: str) -> None:
    conn = await asyncpg.connect(owner_url, timeout=10)
    try:
        await conn.execute(statement, timeout=60)
    finally:
        await conn.close()


async def postgres_facts(database_url: str) -> dict[str, str]:
    """The server's version and the settings that move a flush's cost, for a report."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        facts = {"server_version": str(await conn.fetchval("SHOW server_version"))}
        for setting in ("synchronous_commit", "fsync", "shared_buffers", "max_wal_size"):
            facts[setting] = str(await conn.fetchval(f"SHOW {setting}"))
        return facts
    finally:
        await conn.close()
