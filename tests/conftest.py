"""A real Kafka broker and a real PostgreSQL server for the whole test session.

Providers, in order: DISTCOUNT_KAFKA_BOOTSTRAP / DISTCOUNT_DATABASE_URL from the environment;
testcontainers when a Docker engine answers; otherwise the project's own local stack
(`distcount dev up`), which is stopped again at the end if this session started it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from testcontainers.community.kafka import KafkaContainer
from testcontainers.community.postgres import PostgresContainer

from distcount_config import load, project_root
from distcount_devstack import Stack
from distcount_store import connect, find_migrations, migrate
from tests.integration.pipeline import Pipeline

ROOT = project_root()


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    database_url: str
    provider: str

    def database(self, name: str) -> str:
        """The URL of database `name` on the same server."""
        return urlunsplit(urlsplit(self.database_url)._replace(path=f"/{name}"))


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
        yield Services(bootstrap, database_url, "environment")
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
    stack = Stack(load(environ), say=lambda line: print(f"[dev stack] {line}"))
    before = asyncio.run(stack.status())
    asyncio.run(stack.up(services=False))
    try:
        yield Services(stack.kafka_bootstrap, stack.database_url, "local stack")
    finally:
        if not any(component.running for component in before):
            stack.down()


@pytest.fixture
async def fresh_database(services: Services) -> AsyncIterator[str]:
    """An empty database of its own, dropped afterwards; yields its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await connect(services.database("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield services.database(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def topic_name() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pipeline(
    services: Services, fresh_database: str, topic_name: str, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    """A migrated database, a topic with its dead-letter topic, and processes stopped at the end."""
    assert ROOT is not None
    await migrate(fresh_database, find_migrations(ROOT / "migrations"))
    pipe = Pipeline(
        bootstrap=services.kafka_bootstrap,
        database_url=fresh_database,
        topic=topic_name,
        group=f"{topic_name}.group",
        logs=tmp_path,
    )
    await pipe.create_topics()
    try:
        yield pipe
    finally:
        await asyncio.to_thread(pipe.stop_all)
