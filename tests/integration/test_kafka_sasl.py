"""Kafka with SASL: a private broker whose only client listener is SASL_PLAINTEXT (mechanism
PLAIN, users in its JAAS configuration, written here), through which the real ingress and
aggregator count increments end to end, configured only by DISTCOUNT_KAFKA_* settings; a wrong
password fails with a clear error, and the password shows in no log nor message."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from distcount_config import Settings, kafka_client_options, load, load_dev
from distcount_devstack._java import checked_java
from distcount_devstack._kafka import new_cluster_id
from distcount_devstack._maven import KafkaJars
from distcount_devstack._process import ProcessRecord, spawn, stop, wait_started
from distcount_store import create_database, find_migrations, migrate
from tests.conftest import ROOT, Services
from tests.integration.conftest import free_port
from tests.integration.pipeline import Pipeline, counts, wait_for

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "broker-admin-pw"
USER = "distcount-svc"
PASSWORD = "Sasl-pw-8f3e1c"  # looked for in every log


@dataclass
class SaslKafka:
    bootstrap: str
    home: Path

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        return {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": password,
        }

    def settings(self) -> Settings:
        environ = {f"DISTCOUNT_{k.upper()}": v for k, v in self.env().items()}
        return load({**environ, "DISTCOUNT_KAFKA_BOOTSTRAP": self.bootstrap})

    async def answers(self) -> bool:
        admin = AIOKafkaAdminClient(**kafka_client_options(self.settings()))
        try:
            await admin.start()
            await admin.describe_cluster()
        except (KafkaError, OSError):
            return False
        finally:
            await admin.close()
        return True


def _server_properties(home: Path, port: int, controller_port: int) -> str:
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="admin" password="{ADMIN_PASSWORD}" '
        f'user_admin="{ADMIN_PASSWORD}" user_{USER}="{PASSWORD}";'
    )
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
            f"log.dirs={home / 'data'}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


@pytest.fixture(scope="module")
def sasl_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="distcount-sasl-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
async def sasl_kafka(sasl_dir: Path) -> AsyncIterator[SaslKafka]:
    dev = load_dev({})
    java = checked_java(dev.java_home)
    libs = KafkaJars(dev.cache_dir, dev.kafka_version, dev.maven_repo_url).ensure(java, print)
    port, controller_port = free_port(), free_port()
    config = sasl_dir / "server.properties"
    config.write_text(_server_properties(sasl_dir, port, controller_port))
    log4j = sasl_dir / "log4j2.properties"
    log4j.write_text(
        "appender.file.type=File\nappender.file.name=FILE\n"
        f"appender.file.fileName={sasl_dir / 'server.log'}\n"
        "appender.file.layout.type=PatternLayout\nappender.file.layout.pattern=[%d] %p %m%n\n"
        "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=FILE\n"
    )
    classpath = ["-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={log4j}"]
    await asyncio.to_thread(
        subprocess.run,
        [str(java), *classpath, "kafka.tools.StorageTool", "format", "--cluster-id",
         new_cluster_id(), "--config", str(config)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record: ProcessRecord = spawn(
        [java, "-Xmx512m", *classpath, "kafka.Kafka", config], sasl_dir / "broker.log"
    )
    broker = SaslKafka(f"127.0.0.1:{port}", sasl_dir)
    try:
        await wait_started(
            "the SASL broker",
            record,
            [sasl_dir / "broker.log", sasl_dir / "server.log"],
            ready=broker.answers,
            timeout_s=120,
            where=broker.bootstrap,
        )
        yield broker
    finally:
        await stop(record, timeout_s=30)


@pytest.fixture
async def pipeline(
    sasl_kafka: SaslKafka, services: Services, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    assert ROOT is not None
    name = f"test_{uuid.uuid4().hex[:12]}"
    await create_database(services.database("postgres"), name)
    database_url = services.database(name)
    await migrate(database_url, find_migrations(ROOT / "migrations"))
    topic = f"sasl.{uuid.uuid4().hex[:8]}"
    pipe = Pipeline(sasl_kafka.bootstrap, database_url, topic, f"{topic}.group", tmp_path)
    # the topics are made through SASL too, with the options every client of distcount uses
    admin = AIOKafkaAdminClient(**kafka_client_options(sasl_kafka.settings()))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, pipe.partitions, 1) for t in (pipe.topic, pipe.dlq_topic)]
        )
    finally:
        await admin.close()
    try:
        yield pipe
    finally:
        await asyncio.to_thread(pipe.stop_all)


def _logs(pipe: Pipeline) -> str:
    return "\n".join(path.read_text(errors="replace") for path in pipe.logs.glob("*.log"))


async def test_the_ingress_and_the_aggregator_count_through_sasl(
    sasl_kafka: SaslKafka, pipeline: Pipeline
) -> None:
    pipeline.start("aggregator", "aggregator", **sasl_kafka.env())
    url = await pipeline.start_ingress(**sasl_kafka.env())
    sent = [("a", 1), ("b", 5), ("a", 2)]
    async with httpx.AsyncClient(base_url=url) as client:
        for key, value in sent:
            answer = await client.post("/increment", json={"key": key, "value": value})
            assert answer.status_code == 202, answer.text
        batch = {"increments": [{"key": "c", "value": 7}, {"key": "a", "value": 1}]}
        assert (await client.post("/increments", json=batch)).status_code == 202
    expected = dict(counts([*sent, ("c", 7), ("a", 1)]))

    async def counted() -> bool:
        return await pipeline.totals() == expected

    await wait_for(counted, 60, f"the totals to be {expected}")
    # and `distcount incr`, a direct producer, goes through SASL as well
    done = await asyncio.to_thread(
        subprocess.run,
        [*_cli(), "incr", "d", "3"],
        env=pipeline.env(**sasl_kafka.env()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in _logs(pipeline)


async def test_a_wrong_password_fails_clearly_without_showing_it(
    sasl_kafka: SaslKafka, pipeline: Pipeline
) -> None:
    wrong = "Wrong-pw-41b7"
    done = await asyncio.to_thread(
        subprocess.run,
        [*_cli(), "incr", "d", "3"],
        env=pipeline.env(**sasl_kafka.env(wrong)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "check DISTCOUNT_KAFKA_SASL_USERNAME, DISTCOUNT_KAFKA_SASL_PASSWORD" in done.stderr
    assert wrong not in done.stdout + done.stderr
    # the ingress keeps serving, answering 503, and its log says why
    port = free_port()
    pipeline.start("ingress", "ingress", http_port=str(port), **sasl_kafka.env(wrong))

    async def refused_in_log() -> bool:
        return "Authentication failed" in _logs(pipeline)

    await wait_for(refused_in_log, 60, "the ingress to log the failed authentication")

    async def serving() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                live = await client.get(f"http://127.0.0.1:{port}/health/live")
        except httpx.HTTPError:
            return False
        return live.status_code == 200

    await wait_for(serving, 60, "the ingress to serve")
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.post(
            f"http://127.0.0.1:{port}/increment", json={"key": "x", "value": 1}
        )
    assert answer.status_code == 503
    await asyncio.to_thread(pipeline.stop_all)
    assert wrong not in _logs(pipeline)


def _cli() -> list[str]:
    return [sys.executable, "-m", "distcount_cli"]
