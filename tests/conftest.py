"""A real Kafka broker and a real PostgreSQL server for the whole test session.

Providers, in order: DISTCOUNT_KAFKA_BOOTSTRAP / DISTCOUNT_DATABASE_URL from the environment;
testcontainers when a Docker engine answers; otherwise the project's own local stack
(`distcount dev up`), which is stopped again at the end if this session started it.

Tests create their databases and migrate them as an admin role (DISTCOUNT_MIGRATE_DATABASE_URL
when the environment provides the servers); the services they start log in as a plain role, as
in production: the provider's own services' role, else one this session creates and drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import pytest
from testcontainers.community.kafka import KafkaContainer
from testcontainers.community.postgres import PostgresContainer

from distcount_config import load, load_dev, project_root
from distcount_devstack import Stack
from distcount_store import connect, create_database, find_migrations, migrate, service_role
from tests.integration.pipeline import Pipeline

ROOT = project_root()


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    database_url: str  # an admin: creates the databases and migrates them
    provider: str
    # the provider's own role for the services, when it has one apart from the admin
    service_database_url: str | None = None

    def database(self, name: str) -> str:
        """The URL of database `name` on the same server, as the admin."""
        return urlunsplit(urlsplit(self.database_url)._replace(path=f"/{name}"))


@dataclass(frozen=True)
class Login:
    """A role the services log in as: no superuser, owns nothing, granted by `migrate`."""

    user: str
    password: str

    def url(self, database_url: str) -> str:
        """`database_url` (an admin's) as this role."""
        parts = urlsplit(database_url)
        server = parts.netloc.rpartition("@")[2]
        login = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return urlunsplit(parts._replace(netloc=f"{login}@{server}"))


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    bootstrap = os.environ.get("DISTCOUNT_KAFKA_BOOTSTRAP")
    database_url = os.environ.get("DISTCOUNT_DATABASE_URL")
    if bootstrap and database_url:
        admin_url = os.environ.get("DISTCOUNT_MIGRATE_DATABASE_URL") or database_url
        separate = service_role(database_url, admin_url) is not None
        yield Services(bootstrap, admin_url, "environment", database_url if separate else None)
    elif _docker_engine_answers():
        yield from _testcontainers()
    else:
        yield from _local_stack()


def _testcontainers() -> Iterator[Services]:
    with (
        KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka,
        PostgresContainer("postgres:17", driver=None) as postgres,
    ):
        url = postgres.get_connection_url()
        yield Services(kafka.get_bootstrap_server(), url, "testcontainers")


def _local_stack() -> Iterator[Services]:
    # only the DEV_ settings: where the local stack lives and on which ports
    environ = {k: v for k, v in os.environ.items() if k.startswith("DISTCOUNT_DEV_")}
    stack = Stack(load(environ), load_dev(environ), say=lambda line: print(f"[dev stack] {line}"))
    before = asyncio.run(stack.status())
    asyncio.run(stack.up(services=False))
    # a stack made before the roles were split has one role for both (its superuser)
    separate = service_role(stack.database_url, stack.migrate_database_url) is not None
    try:
        yield Services(
            stack.kafka_bootstrap,
            stack.migrate_database_url,
            "local stack",
            stack.database_url if separate else None,
        )
    finally:
        if not any(component.running for component in before):
            asyncio.run(stack.down())


@pytest.fixture(scope="session")
async def service_login(services: Services) -> AsyncIterator[Login | None]:
    """The role the services log in as; None when the provider has none and the admin may not
    create one (the services then run as the admin)."""
    if services.service_database_url is not None:
        parts = urlsplit(services.service_database_url)
        yield Login(unquote(parts.username or ""), unquote(parts.password or ""))
        return
    login = Login(f"distcount_test_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex)
    admin = await connect(services.database("postgres"))
    try:
        may_create = await admin.fetchval(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        if may_create:
            await admin.execute(
                f"CREATE ROLE {login.user} LOGIN PASSWORD '{login.password}' "
                "NOSUPERUSER NOCREATEDB NOCREATEROLE"
            )
    finally:
        await admin.close()
    if not may_create:
        yield None
        return
    try:
        yield login
    finally:
        admin = await connect(services.database("postgres"))
        try:
            # its grants went with the session's databases; one that a crash left keeps it
            with contextlib.suppress(asyncpg.DependentObjectsStillExistError):
                await admin.execute(f"DROP ROLE IF EXISTS {login.user}")
        finally:
            await admin.close()


@pytest.fixture
async def fresh_database(services: Services) -> AsyncIterator[str]:
    """An empty database of its own, as the local stack makes it, dropped afterwards; yields its
    URL, as the admin."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await create_database(services.database("postgres"), name)
    try:
        yield services.database(name)
    finally:
        admin = await connect(services.database("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def topic_name() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


@dataclass
class _ServicesAsTheirRole(Pipeline):
    """The services (and `distcount` commands) log in as the services' role; the test keeps the
    admin's `database_url`, to look at the database, or break it, as an operator would."""

    service_database_url: str = ""

    def env(self, **overrides: str) -> dict[str, str]:
        return super().env(**{"database_url": self.service_database_url, **overrides})


@pytest.fixture
async def pipeline(
    services: Services,
    fresh_database: str,
    service_login: Login | None,
    topic_name: str,
    tmp_path: Path,
) -> AsyncIterator[Pipeline]:
    """A migrated database, a topic with its dead-letter topic, and processes stopped at the end;
    the processes log in as the services' role, which the migrations granted its privileges."""
    assert ROOT is not None
    grantee = service_login.user if service_login is not None else None
    await migrate(fresh_database, find_migrations(ROOT / "migrations"), grant_to=grantee)
    pipe = _ServicesAsTheirRole(
        bootstrap=services.kafka_bootstrap,
        database_url=fresh_database,
        topic=topic_name,
        group=f"{topic_name}.group",
        logs=tmp_path,
        service_database_url=(
            service_login.url(fresh_database) if service_login is not None else fresh_database
        ),
    )
    await pipe.create_topics()
    try:
        yield pipe
    finally:
        await asyncio.to_thread(pipe.stop_all)
