"""`distcount dev up | down | status`: the whole local stack, idempotently.

`up` starts only what is not running (so after a crash it restarts just the missing piece), uses
services the environment points at instead of starting its own, then creates the database and the
services' role, applies the migrations (as the superuser, which grants that role its privileges)
and creates the topics. It runs as many ingress and aggregator processes as it is asked (`Scale`;
one of each by default), starting those missing and stopping those beyond the counts, and a Kafka
of one node or a cluster of several (`KafkaCluster`), each node restarted on its own.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distcount_config import DevSettings, Settings, export_lines, kafka_client_options
from distcount_devstack import _kafka, _postgres
from distcount_devstack._cluster import KAFKA, KafkaCluster, brokers_to_run, is_broker
from distcount_devstack._errors import DevStackError
from distcount_devstack._health import ComponentStatus, always, component_status
from distcount_devstack._java import checked_java
from distcount_devstack._maven import KafkaJars, find_maven
from distcount_devstack._process import ProcessRecord, is_alive, listens_on, port_in_use, stop
from distcount_devstack._scale import (
    AGGREGATOR,
    INGRESS,
    SERVICES,
    Scale,
    extra_names,
    instance_names,
    parse_instance,
    recorded_counts,
    wanted_names,
)
from distcount_devstack._services import ServiceNode, http_ok
from distcount_devstack._state import StackState, locked
from distcount_devstack._wait import wait_until
from distcount_store import (
    Stall,
    StoreError,
    connect,
    create_database,
    find_migrations,
    migrate,
    read_stalls,
    redact,
    service_role,
)

POSTGRES = "postgres"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
# from the last node answering to every node listed in the cluster's metadata
_JOIN_TIMEOUT_S = 60.0


class Stack:
    """The local stack of `dev`, serving the services of `settings`."""

    def __init__(
        self, settings: Settings, dev: DevSettings, say: Callable[[str], None] = print
    ) -> None:
        self.settings = settings
        self.dev = dev
        self.say = say
        self.postgres = _postgres.PostgresNode(
            self.dev.state_dir / POSTGRES, self.dev.postgres_port
        )
        self.jars = KafkaJars(self.dev.cache_dir, self.dev.kafka_version, self.dev.maven_repo_url)

    # -- where things are -------------------------------------------------------------------

    @property
    def services(self) -> dict[str, ServiceNode]:
        """The service processes, by name: those recorded in the state folder, at least one
        ingress and one aggregator, each service's in order (`dev metrics` reads their logs)."""
        counts = recorded_counts(StackState.load(self.dev.state_dir).processes)
        return {
            name: self._node(name)
            for name in wanted_names({s: max(1, counts[s]) for s in SERVICES})
        }

    def _node(self, name: str) -> ServiceNode:
        parsed = parse_instance(name)
        if parsed is None:
            raise ValueError(f"{name} names no service process")
        return ServiceNode(name, self.dev.state_dir / name, parsed[0])

    def kafka_cluster(self, brokers: int | None = None) -> KafkaCluster:
        """The local Kafka of `brokers` nodes; by default as many as the state folder records."""
        if brokers is None:
            brokers = StackState.load(self.dev.state_dir).kafka_brokers or 1
        return KafkaCluster(
            self.dev.state_dir, brokers, self.dev.kafka_port, self.dev.kafka_controller_port
        )

    @property
    def external_kafka(self) -> bool:
        return self._external_kafka(self.kafka_cluster())

    def _external_kafka(self, cluster: KafkaCluster) -> bool:
        # the stack's own nodes, as `dev status --env` names them, are not another Kafka
        return self.dev.external_kafka and not cluster.serves(self.settings.kafka_bootstrap)

    @property
    def external_postgres(self) -> bool:
        parts = urlsplit(self.settings.database_url)
        is_local = parts.hostname in _LOCAL_HOSTS and (parts.port or 5432) == self.dev.postgres_port
        return self.dev.external_postgres and not is_local

    @property
    def kafka_bootstrap(self) -> str:
        """Every node of the local Kafka, or the one the environment points at."""
        cluster = self.kafka_cluster()
        if self._external_kafka(cluster):
            return self.settings.kafka_bootstrap
        return cluster.bootstrap

    @property
    def database_name(self) -> str:
        return urlsplit(self.settings.database_url).path.lstrip("/")

    @property
    def database_url(self) -> str:
        """As the services log in."""
        if self.external_postgres:
            return self.settings.database_url
        return self.postgres.service_url(self.database_name)

    @property
    def migrate_database_url(self) -> str:
        """As the migrations run."""
        if self.external_postgres:
            return self.settings.migrate_database_url
        return self.postgres.url(self.database_name)

    def env_lines(self) -> list[str]:
        """`export` lines for the endpoints the settings table marks, as this stack runs them."""
        return export_lines(
            replace(
                self.settings,
                kafka_bootstrap=self.kafka_bootstrap,
                database_url=self.database_url,
                migrate_database_url=self.migrate_database_url,
            )
        )

    # -- up -----------------------------------------------------------------------------------

    async def up(
        self,
        services: bool = True,
        *,
        ingress_workers: int | None = None,
        aggregators: int | None = None,
        brokers: int | None = None,
    ) -> None:
        """Start what is missing; `services=False` leaves out the ingress and the aggregators.
        `ingress_workers`, `aggregators`: how many processes of each (1 to `MAX_PROCESSES`),
        those beyond stopped; None: as many as the stack runs (as its state folder records
        them, a crashed one included), 1 when it runs none. `brokers`: the nodes of the local
        Kafka (1 to `MAX_BROKERS`), fixed once its storage exists; None: as the state folder
        records them, 1 in a new one."""
        scale = Scale(ingress_workers, aggregators)  # refused before anything starts
        with locked(self.dev.state_dir, self.say):
            state = StackState.load(self.dev.state_dir)
            counts = scale.counts(state.processes)
            cluster = self.kafka_cluster(
                brokers_to_run(brokers, state.kafka_brokers, self.dev.state_dir)
            )
            external_kafka = self._external_kafka(cluster)
            if external_kafka and brokers is not None:
                raise DevStackError(
                    "--brokers sets the nodes of the stack's own Kafka, but "
                    "DISTCOUNT_KAFKA_BOOTSTRAP points at another one "
                    f"({self.settings.kafka_bootstrap}); unset it, or leave out --brokers"
                )
            nodes = cluster.nodes
            state.check_data([node.data_dir for node in nodes.values()], self.postgres.data_dir)
            if not external_kafka:
                # written with the first process started: a refusal leaves no state behind
                state.kafka_brokers = cluster.brokers
            missing = [] if external_kafka else [n for n in nodes if not _alive(state, n)]
            start_kafka = bool(missing)
            start_postgres = not self.external_postgres and not _alive(state, POSTGRES)
            await self._check_external()

            # everything that can fail fast fails before anything is downloaded or started
            java = checked_java(self.dev.java_home) if start_kafka else None
            if java is not None and not self.jars.cached:
                find_maven()
            bindir = _postgres.find_bindir() if start_postgres else None
            start_ingress = services and not all(
                _alive(state, name) for name in instance_names(INGRESS, counts[INGRESS])
            )
            # the port is free, or the stack's own ingress processes share it with a new one
            sharing = _running(state, INGRESS)
            if missing and cluster.brokers > 1:
                cluster.check_ports(
                    {
                        self.dev.postgres_port: "DISTCOUNT_DEV_POSTGRES_PORT",
                        self.settings.http_port: "DISTCOUNT_HTTP_PORT",
                    }
                )
            self._check_ports(
                [nodes[name] for name in missing], start_postgres, start_ingress and not sharing
            )
            if start_ingress and sharing:
                self._check_port_shared(sharing)

            # then what takes long but changes nothing that runs
            libs = None
            if java is not None:
                libs = self.jars.ensure(java, lambda line: self.say(f"kafka: {line}"))

            starts = []
            if bindir is not None:
                starts.append(self._start_postgres(state, bindir))
            if java is not None and libs is not None:
                starts.append(self._start_kafka(state, java, libs, cluster, missing))
            await asyncio.gather(*starts)
            await self._provision(cluster)
            if services:
                await self._start_services(state, counts)

    async def _start_postgres(self, state: StackState, bindir: Path) -> None:
        if not self.postgres.initialised:
            self.say(f"postgres: creating a cluster in {self.postgres.data_dir}")
            self.postgres.init(bindir)
        try:
            await self.postgres.start(bindir, timeout_s=60)
        finally:
            # recorded even when it was too slow to start: `dev down` stops it
            record = self.postgres.server()
            if record is not None:
                state.processes[POSTGRES] = record
                state.save()
        if record is None:
            raise DevStackError(
                f"pg_ctl says PostgreSQL started, but no server runs on {self.postgres.data_dir}; "
                f"see {self.postgres.log}"
            )
        self.say(f"postgres: started (pid {record.pid}) from {bindir}")

    async def _start_kafka(
        self, state: StackState, java: Path, libs: Path, cluster: KafkaCluster, names: list[str]
    ) -> None:
        """Start the nodes `names` of `cluster` at once: a node of a cluster answers only once
        a majority of the controllers runs."""
        nodes = cluster.nodes
        cluster_id = cluster.cluster_id()
        formats = []
        for name in names:
            node = nodes[name]
            node.write_config()
            if not node.formatted:
                self.say(f"{name}: formatting storage in {node.data_dir}")
                formats.append(asyncio.to_thread(node.format, java, libs, cluster_id))
        await asyncio.gather(*formats)
        waits = []
        for name in names:
            record = nodes[name].start(java, libs)
            state.processes[name] = record
            state.save()
            self.say(f"{name}: started Apache Kafka {self.dev.kafka_version} (pid {record.pid})")
            waits.append(nodes[name].wait_ready(record, timeout_s=120))
        await asyncio.gather(*waits)
        if cluster.brokers > 1:
            await self._wait_joined(cluster)

    async def _wait_joined(self, cluster: KafkaCluster) -> None:
        """Until the cluster lists every node: topics with a copy on each can be created."""
        joined = 0

        async def all_joined() -> bool:
            nonlocal joined
            joined = await _kafka.registered_brokers(cluster.bootstrap, timeout_s=5)
            return joined >= cluster.brokers

        if not await wait_until(all_joined, _JOIN_TIMEOUT_S):
            raise DevStackError(
                f"only {joined} of the {cluster.brokers} Kafka brokers joined the cluster within "
                f"{_JOIN_TIMEOUT_S:.0f} s; see server.log in "
                + ", ".join(str(node.home) for node in cluster.nodes.values())
            )

    async def _start_services(self, state: StackState, counts: dict[str, int]) -> None:
        extra = extra_names(state.processes, counts)
        if extra:
            self.say(
                f"running {counts[INGRESS]} ingress and {counts[AGGREGATOR]} aggregator "
                f"processes: stopping {', '.join(extra)}"
            )
            await self._stop_services(state, extra)
        if counts[AGGREGATOR] > self.settings.partitions:
            self.say(
                f"aggregator: hint: {counts[AGGREGATOR]} aggregators share "
                f"{self.settings.partitions} partitions; "
                f"{counts[AGGREGATOR] - self.settings.partitions} of them get none and stand by"
            )
        env = {
            "DISTCOUNT_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "DISTCOUNT_DATABASE_URL": self.database_url,
            # not the migrations' role, even one `dev up` was given: the services need not know it
            "DISTCOUNT_MIGRATE_DATABASE_URL": self.database_url,
        }
        if not self.dev.metrics_chosen:
            # like a development server: metrics on the console (`distcount dev metrics`), where
            # a single request's timing should show
            env["DISTCOUNT_METRICS"] = "console"
            if not self.dev.sample_rate_chosen:
                env["DISTCOUNT_METRICS_SAMPLE_RATE"] = "1"
        waits = []
        for name in wanted_names(counts):
            if _alive(state, name):
                continue
            node = self._node(name)
            record = node.start(env)
            state.processes[name] = record
            state.save()
            self.say(f"{name}: started (pid {record.pid}); log in {node.log}")
            if node.service == INGRESS:
                waits.append(node.wait_http(record, self.settings.http_port, timeout_s=60))
            else:
                waits.append(node.wait_alive(record, settle_s=2.0))
        await asyncio.gather(*waits)

    def _user_kafka(self) -> dict[str, Any]:
        """How the services reach a Kafka of the user's (TLS, SASL): the local stack's own
        brokers speak plain text on loopback."""
        return kafka_client_options(self.settings)

    async def _check_external(self) -> None:
        if self.external_kafka and not await _kafka.answers(
            self.kafka_bootstrap, timeout_s=10, security=self._user_kafka()
        ):
            raise DevStackError(
                f"DISTCOUNT_KAFKA_BOOTSTRAP is {self.kafka_bootstrap}, but no Kafka broker answers "
                "there; start it, or unset the variable to let `distcount dev up` run one"
            )
        if self.external_postgres and not await _postgres.answers(self.database_url, timeout_s=10):
            raise DevStackError(
                f"DISTCOUNT_DATABASE_URL is {redact(self.database_url)}, but that database cannot "
                "be reached; start it, or unset the variable to let `distcount dev up` run one"
            )

    def _check_ports(self, kafka: list[_kafka.KafkaNode], postgres: bool, ingress: bool) -> None:
        wanted: list[tuple[int, str, str]] = []
        if ingress:
            wanted.append((self.settings.http_port, "the ingress", "DISTCOUNT_HTTP_PORT"))
        for node in kafka:
            # the nodes after the first are on these ports plus 2, 4, …
            which = "" if len(node.voters) == 1 else f" {node.node_id}"
            wanted += [
                (node.port, f"the Kafka broker{which}", "DISTCOUNT_DEV_KAFKA_PORT"),
                (
                    node.controller_port,
                    f"the Kafka controller{which}",
                    "DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT",
                ),
            ]
        if postgres:
            wanted.append((self.dev.postgres_port, "PostgreSQL", "DISTCOUNT_DEV_POSTGRES_PORT"))
        for port, what, variable in wanted:
            if port_in_use(port):
                raise DevStackError(
                    f"port {port} on 127.0.0.1, wanted for {what}, is already in use by another "
                    f"process; stop that process, or choose another port with {variable}"
                )

    def _check_port_shared(self, running: list[ProcessRecord]) -> None:
        """A new ingress process can join those `running` only if whatever listens on the port
        shares it."""
        port = self.settings.http_port
        if port_in_use(port, shared=True):
            pids = ", ".join(str(record.pid) for record in running)
            raise DevStackError(
                f"port {port} on 127.0.0.1 cannot be shared (SO_REUSEPORT) with the ingress "
                f"processes that run (pid {pids}): one was started by a `distcount dev up` from "
                "before --ingress-workers, or another program listens there too. Run `distcount "
                "dev down`, then `distcount dev up` with the counts again"
            )

    async def _provision(self, cluster: KafkaCluster) -> None:
        if not self.external_postgres:
            created = await create_database(self.postgres.url("postgres"), self.database_name)
            if created:
                self.say(f"postgres: created database {self.database_name}")
            if self.postgres.legacy_roles:
                self.say(
                    f"postgres: hint: this state folder predates the services' own role, so they "
                    f"log in as the superuser {_postgres.SERVICE_USER}; `distcount dev down "
                    "--purge` (which deletes the local data) gives the stack separate roles"
                )
            elif await self.postgres.ensure_service_role():
                self.say(f"postgres: created role {_postgres.SERVICE_USER} for the services")
        role = service_role(self.database_url, self.migrate_database_url)
        try:
            applied = await migrate(
                self.migrate_database_url,
                find_migrations(self.settings.migrations_dir),
                grant_to=role,
            )
        except StoreError as exc:
            raise DevStackError(f"migrations: {exc}") from exc
        names = ", ".join(f"{m.version}_{m.name}" for m in applied) or "already up to date"
        granted = f"; role {role} granted what the services need" if role is not None else ""
        self.say(f"migrations: {names}{granted}")
        topics = {
            self.settings.topic: self.settings.partitions,
            self.settings.dlq_topic: self.settings.partitions,
        }
        # an external Kafka's topics at a single copy, as before clusters
        copies = 1 if self._external_kafka(cluster) else cluster.replication
        security = self._user_kafka() if self._external_kafka(cluster) else None
        for warning in await _kafka.ensure_topics(self.kafka_bootstrap, topics, copies, security):
            self.say(f"kafka: warning: {warning}")
        kept = f", {copies} copies of each" if copies > 1 else ""
        self.say(
            f"kafka: topics {self.settings.topic} ({self.settings.partitions} partitions{kept}) "
            f"and {self.settings.dlq_topic} ready"
        )

    # -- down -----------------------------------------------------------------------------------

    async def down(self, purge: bool = False) -> None:
        folder = self.dev.state_dir
        if not folder.exists():
            self.say("nothing to stop")
            return
        with locked(folder, self.say):
            try:
                state = StackState.load(folder)
            except DevStackError:
                if not purge:
                    raise
                state = StackState(folder)
            await self._stop_all(state)
            if purge:
                state.purge()
                self.say(f"deleted {folder}")
            else:
                self.say(
                    f"stopped; data kept in {folder} (`distcount dev down --purge` deletes it)"
                )

    async def _stop_all(self, state: StackState) -> None:
        # the services first: the aggregators flush on SIGTERM, which needs both servers
        await self._stop_services(
            state, [name for name in state.processes if parse_instance(name) is not None]
        )
        # a cluster's nodes all at once: one stopped after the others would lack the majority
        # of controllers its controlled shutdown asks
        await self._stop_servers(state, sorted(name for name in state.processes if is_broker(name)))
        await self._stop_servers(state, [POSTGRES])

    async def _stop_servers(self, state: StackState, names: list[str]) -> None:
        stopping = []
        for name in names:
            record = state.processes.pop(name, None)
            if record is None or not is_alive(record):
                continue
            self.say(f"{name}: stopping pid {record.pid}")
            stopping.append((name, record))
        timeout_s = self.dev.stop_timeout_s

        async def stopped(name: str, record: ProcessRecord) -> None:
            # PostgreSQL's SIGTERM waits for every client to leave; SIGINT is its fast shutdown
            first = signal.SIGINT if name == POSTGRES else signal.SIGTERM
            if await stop(record, timeout_s, first):
                self.say(f"{name}: did not stop within {timeout_s:.0f} s; killed")

        await asyncio.gather(*(stopped(name, record) for name, record in stopping))
        state.save()

    async def _stop_services(self, state: StackState, names: list[str]) -> None:
        """SIGTERM to the service processes `names` at once (aggregators stopped together hand
        no partitions to each other), SIGKILL to those still running after the timeout; their
        entries leave the state."""
        order = {name: i for i, name in enumerate(wanted_names(recorded_counts(names)))}
        stopping = []
        for name in sorted(names, key=lambda n: order.get(n, len(order))):
            record = state.processes.pop(name, None)
            if record is None or not is_alive(record):
                continue
            self.say(f"{name}: stopping pid {record.pid}")
            stopping.append((name, record))
        timeout_s = self.dev.stop_timeout_s
        killed = await asyncio.gather(*(stop(record, timeout_s) for _, record in stopping))
        for (name, _), was_killed in zip(stopping, killed, strict=True):
            if was_killed:
                self.say(f"{name}: did not stop within {timeout_s:.0f} s; killed")
        state.save()

    # -- status ---------------------------------------------------------------------------------

    async def status(self) -> list[ComponentStatus]:
        state = StackState.load(self.dev.state_dir)
        counts = Scale().counts(state.processes)
        database_url = self.database_url
        http_port = self.settings.http_port
        return list(
            await asyncio.gather(
                *self._kafka_status(state),
                component_status(
                    POSTGRES,
                    state.processes.get(POSTGRES),
                    self.external_postgres,
                    redact(database_url),
                    lambda: _postgres.answers(database_url, timeout_s=3),
                ),
                *(
                    self._ingress_status(name, state.processes.get(name), http_port)
                    for name in instance_names(INGRESS, counts[INGRESS])
                ),
                self._aggregator_status(state.processes.get(AGGREGATOR), stalls=True),
                *(
                    self._aggregator_status(state.processes.get(name), name=name)
                    for name in instance_names(AGGREGATOR, counts[AGGREGATOR])[1:]
                ),
            )
        )

    def _kafka_status(self, state: StackState) -> list[Awaitable[ComponentStatus]]:
        """A row per node of the local Kafka, each healthy when it answers on its own port;
        one row for an external Kafka."""
        cluster = self.kafka_cluster(state.kafka_brokers or 1)
        if self._external_kafka(cluster):
            url = self.settings.kafka_bootstrap
            security = self._user_kafka()
            return [
                component_status(
                    KAFKA,
                    None,
                    True,
                    url,
                    lambda: _kafka.answers(url, timeout_s=3, security=security),
                )
            ]
        return [
            component_status(
                name,
                state.processes.get(name),
                False,
                node.bootstrap,
                partial(_kafka.answers, node.bootstrap, timeout_s=3, only_these=True),
            )
            for name, node in cluster.nodes.items()
        ]

    @staticmethod
    async def _ingress_status(
        name: str, record: ProcessRecord | None, port: int
    ) -> ComponentStatus:
        """Healthy: this process listens on the port, and the port answers ready (the port is
        shared: which process answers is the kernel's choice)."""

        async def ready() -> bool:
            return (
                record is not None
                and listens_on(record, port)
                and await http_ok("127.0.0.1", port, "/health/ready")
            )

        return await component_status(name, record, False, f"http://127.0.0.1:{port}", ready)

    async def _aggregator_status(
        self, record: ProcessRecord | None, name: str = AGGREGATOR, stalls: bool = False
    ) -> ComponentStatus:
        """`stalls`: the row that tells the group's stalled partitions (the first aggregator's:
        which of them holds a stalled partition is the group's choice)."""
        status = await component_status(
            name, record, False, f"group {self.settings.group_id}", always
        )
        stalled = await self.stalls() if stalls else []
        if not stalled:
            return status
        return replace(
            status,
            healthy=False,
            problems=tuple(f"counting stopped: {stall.describe()}" for stall in stalled),
        )

    async def stalls(self) -> list[Stall]:
        """The stalled partitions of the stack's group and topic; none when PostgreSQL does not
        answer (its own row says so) or has no stall table yet."""
        try:
            conn = await connect(self.database_url, timeout_s=3)
        except StoreError:
            return []
        try:
            return await read_stalls(conn, self.settings.group_id, self.settings.topic)
        except Exception:  # no table before the migrations ran, or no privilege: nothing to show
            return []
        finally:
            await conn.close()


def _alive(state: StackState, name: str) -> bool:
    record: ProcessRecord | None = state.processes.get(name)
    return record is not None and is_alive(record)


def _running(state: StackState, service: str) -> list[ProcessRecord]:
    """The recorded processes of `service` that run."""
    return [
        record
        for name, record in state.processes.items()
        if (parsed := parse_instance(name)) is not None
        and parsed[0] == service
        and is_alive(record)
    ]
