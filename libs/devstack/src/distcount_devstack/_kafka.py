"""A KRaft Apache Kafka node for development (broker and controller in one process, alone or one
of a cluster on 127.0.0.1), and the topics distcount needs."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from distcount_devstack._errors import DevStackError
from distcount_devstack._process import ProcessRecord, spawn, wait_started

_TOPIC_ALREADY_EXISTS = 36


def replication_factor(brokers: int) -> int:
    """Copies of each partition, internal topics' too: every broker's, up to three."""
    return min(brokers, 3)


def min_insync_replicas(brokers: int) -> int:
    """Copies an acks=all write waits for: two once there are two, so that a write a broker
    acknowledged survives that broker's loss (and writes stop when only one copy is left)."""
    return min(brokers, 2)


class KafkaNode:
    """`voters`: node id -> controller port of every node of the cluster (each a controller
    too); just this node by default."""

    def __init__(
        self,
        home: Path,
        port: int,
        controller_port: int,
        *,
        node_id: int = 1,
        voters: Mapping[int, int] | None = None,
    ) -> None:
        self.home = home
        self.port = port
        self.controller_port = controller_port
        self.node_id = node_id
        self.voters = dict(voters) if voters is not None else {node_id: controller_port}
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

    def cluster_id(self) -> str | None:
        """The id its storage was formatted with; None before it was."""
        try:
            lines = (self.data_dir / "meta.properties").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    def write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        copies = replication_factor(len(self.voters))
        min_isr = min_insync_replicas(len(self.voters))
        quorum = ",".join(f"{i}@127.0.0.1:{port}" for i, port in sorted(self.voters.items()))
        self.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    f"controller.quorum.voters={quorum}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    # the internal topics keep as many copies as those `dev up` creates
                    f"offsets.topic.replication.factor={copies}",
                    f"transaction.state.log.replication.factor={copies}",
                    f"transaction.state.log.min.isr={min_isr}",
                    f"share.coordinator.state.topic.replication.factor={copies}",
                    f"share.coordinator.state.topic.min.isr={min_isr}",
                    f"default.replication.factor={copies}",
                    f"min.insync.replicas={min_isr}",
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

    def format(self, java: Path, libs: Path, cluster_id: str | None = None) -> None:
        """`cluster_id`: the one every node of a cluster shares; a new one by default."""
        if cluster_id is None:
            cluster_id = new_cluster_id()
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
            "the Kafka broker" if len(self.voters) == 1 else f"Kafka broker {self.node_id}",
            record,
            # the JVM's own complaints, before logging starts, are in the process's output
            (self.home / "server.log", self.log),
            ready=lambda: answers(self.bootstrap, timeout_s=2.0, only_these=True),
            timeout_s=timeout_s,
            where=f"on {self.bootstrap}",
        )


def new_cluster_id() -> str:
    # the same shape as Kafka's own random ids: 16 random bytes, URL-safe base64, no padding
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


async def answers(
    bootstrap: str,
    timeout_s: float,
    *,
    only_these: bool = False,
    security: Mapping[str, Any] | None = None,
) -> bool:
    """True when a broker at `bootstrap` answers a metadata request, and then (unless
    `only_these`) the cluster answers another, sent wherever the client chooses. `only_these`
    asks only the servers `bootstrap` names: a node of a cluster answers for itself, whichever
    of the others is down. `security`: the client options of a user's Kafka (TLS, SASL; see
    `distcount_config.kafka_client_options`), none for the local stack's own."""
    admin = AIOKafkaAdminClient(
        **{**(security or {}), "bootstrap_servers": bootstrap},
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        # the client's bootstrap: a metadata request to the servers named, one after the other
        await asyncio.wait_for(admin.start(), timeout_s)
        if not only_these:
            await asyncio.wait_for(admin.list_topics(), timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True


async def registered_brokers(bootstrap: str, timeout_s: float) -> int:
    """How many brokers the cluster at `bootstrap` lists (0 when none answers): a broker that
    answers may yet be the only one the controllers know."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return 0
    finally:
        await admin.close()
    return len(cluster["brokers"])


async def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    replication: int = 1,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the missing topics (name -> partitions), each partition in `replication` copies;
    returns warnings about existing ones. `security` as for `answers`."""
    admin = AIOKafkaAdminClient(
        **{**(security or {}), "bootstrap_servers": bootstrap}, request_timeout_ms=30_000
    )
    warnings: list[str] = []
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, count, replication) for name, count in topics.items()]
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
            # made before the cluster had its nodes, or by someone else
            copies = min((len(p["replicas"]) for p in described["partitions"]), default=0)
            if 0 < copies < replication:
                warnings.append(
                    f"topic {described['topic']} keeps {copies} copies of a partition, "
                    f"not {replication}; it is left as it is"
                )
    except KafkaError as exc:
        raise DevStackError(f"managing topics on {bootstrap} failed: {exc}") from exc
    finally:
        await admin.close()
    return warnings
