"""Servers of a test's own, for faults that must not hit the session's shared ones: a PostgreSQL
and a Kafka broker that a test may kill and restart."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distcount_config import load_dev, project_root
from distcount_devstack._java import checked_java
from distcount_devstack._kafka import KafkaNode
from distcount_devstack._maven import KafkaJars
from distcount_devstack._postgres import PostgresNode, find_bindir
from distcount_devstack._process import ProcessRecord, stop
from distcount_store import create_database, find_migrations, migrate
from tests.conftest import Services
from tests.integration.conftest import free_port
from tests.integration.pipeline import Pipeline

ROOT = project_root()


@pytest.fixture
def private_dir() -> Iterator[Path]:
    # reachable by the unprivileged user PostgreSQL runs as when the tests run as root
    folder = Path(tempfile.mkdtemp(prefix="distcount-fault-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class PrivatePostgres:
    node: PostgresNode
    bindir: Path

    async def kill(self) -> None:
        record = self.node.server()
        assert record is not None, "no PostgreSQL runs to be killed"
        await stop(record, timeout_s=10, first_signal=signal.SIGKILL)

    async def restart(self) -> None:
        await self.node.start(self.bindir, timeout_s=60)


@pytest.fixture
async def private_postgres(private_dir: Path) -> AsyncIterator[PrivatePostgres]:
    node = PostgresNode(private_dir / "postgres", free_port())
    bindir = find_bindir()
    node.init(bindir)
    server = PrivatePostgres(node, bindir)
    try:
        await node.start(bindir, timeout_s=60)
        await create_database(node.url("postgres"), "distcount")
        yield server
    finally:
        record = node.server()
        if record is not None:
            await stop(record, timeout_s=10, first_signal=signal.SIGINT)


@dataclass
class PrivateKafka:
    node: KafkaNode
    java: Path
    libs: Path
    record: ProcessRecord

    async def stop(self) -> None:
        await stop(self.record, timeout_s=30)

    async def kill(self) -> None:
        await stop(self.record, timeout_s=10, first_signal=signal.SIGKILL)

    async def restart(self) -> None:
        self.record = self.node.start(self.java, self.libs)
        await self.node.wait_ready(self.record, timeout_s=120)


@pytest.fixture
async def private_kafka(private_dir: Path) -> AsyncIterator[PrivateKafka]:
    dev = load_dev({})
    java = checked_java(dev.java_home)
    libs = KafkaJars(dev.cache_dir, dev.kafka_version, dev.maven_repo_url).ensure(java, print)
    node = KafkaNode(private_dir / "kafka", free_port(), free_port())
    node.write_config()
    node.format(java, libs)
    broker = PrivateKafka(node, java, libs, node.start(java, libs))
    try:
        await node.wait_ready(broker.record, timeout_s=120)
        yield broker
    finally:
        await broker.stop()


async def make_pipeline(
    bootstrap: str, database_url: str, topic: str, logs: Path, partitions: int = 3
) -> Pipeline:
    assert ROOT is not None
    await migrate(database_url, find_migrations(ROOT / "migrations"))
    pipe = Pipeline(bootstrap, database_url, topic, f"{topic}.group", logs, partitions)
    await pipe.create_topics()
    return pipe


@pytest.fixture
def kafka_of_session(services: Services) -> str:
    return services.kafka_bootstrap
