"""A single-node KRaft Apache Kafka broker for development, and the topics distcount needs."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from distcount_devstack._errors import DevStackError
from distcount_devstack._process import ProcessRecord, spawn, wait_started

_TOPIC_ALREADY_EXISTS = 36


class KafkaNode:
    def __init__(self, home: Path, port: int, controller_port: int) -> None:
        self.home = home
        self.port = port
        self.controller_port = controller_port
        self.data_dir = home / "data"
        self.config = home / "server.properties"
        self.log4j_config = home / "log4j2.properties"
        self.log = home / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    # one node: every internal topic at replication factor 1
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # consumers in tests and dev join at once instead of waiting 3 s
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        self.log4j_config.write_text(
            "\n".join(
                [
                    "appender.file.type=RollingFile",
                    "appender.file.name=FILE",
                    f"appender.file.fileName={self.home / 'server.log'}",
                    f"appender.file.filePattern={self.home / 'server.log.%i'}",
                    "appender.file.layout.type=PatternLayout",
                    "appender.file.layout.pattern=[%d] %p %m (%c)%n",
                    "appender.file.policies.type=Policies",
                    "appender.file.policies.size.type=SizeBasedTriggeringPolicy",
                    "appender.file.policies.size.size=20MB",
                    "appender.file.strategy.type=DefaultRolloverStrategy",
                    "appender.file.strategy.max=3",
                    "rootLogger.level=INFO",
                    "rootLogger.appenderRef.file.ref=FILE",
                    "",
                ]
            )
        )

    def format(self, java: Path, libs: Path) -> None:
        cluster_id = _cluster_id()
        result = subprocess.run(
            [
                str(java),
                "-cp",
                f"{libs}/*",
                f"-Dlog4j2.configurationFile={self.log4j_config}",
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(self.config),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise DevStackError(
                f"formatting Kafka's storage in {self.data_dir} failed:\n"
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )

    def start(self, java: Path, libs: Path) -> ProcessRecord:
        return spawn(
            [
                java,
                "-Xms256m",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.log4j_config}",
                f"-Dkafka.logs.dir={self.home}",
                "-cp",
                f"{libs}/*",
                "kafka.Kafka",
                self.config,
            ],
            self.log,
        )

    async def wait_ready(self, record: ProcessRecord, timeout_s: float) -> None:
        await wait_started(
            "the Kafka broker",
            record,
            # the JVM's own complaints, before logging starts, are in the process's output
            (self.home / "server.log", self.log),
            ready=lambda: answers(self.bootstrap, timeout_s=2.0),
            timeout_s=timeout_s,
            where=f"on {self.bootstrap}",
        )


def _cluster_id() -> str:
    # the same shape as Kafka's own random ids: 16 random bytes, URL-safe base64, no padding
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


async def answers(bootstrap: str, timeout_s: float) -> bool:
    """True when a broker at `bootstrap` answers a metadata request."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True


async def ensure_topics(bootstrap: str, topics: dict[str, int]) -> list[str]:
    """Create the missing topics (name -> partitions); returns warnings about existing ones."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    warnings: list[str] = []
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, count, 1) for name, count in topics.items()]
        )
        for name, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise DevStackError(f"creating topic {name} failed: {message} (code {code})")
        for described in await admin.describe_topics(list(topics)):
            have = len(described["partitions"])
            want = topics[described["topic"]]
            if have != want:
                warnings.append(
                    f"topic {described['topic']} has {have} partitions, not {want}; "
                    "Kafka never removes partitions, so it is left as it is"
                )
    except KafkaError as exc:
        raise DevStackError(f"managing topics on {bootstrap} failed: {exc}") from exc
    finally:
        await admin.close()
    return warnings
