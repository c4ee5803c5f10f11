"""The settings objects: what the services are given (`Settings`) and, apart, what the local
stack is given (`DevSettings`). `_load` fills them from the table of `_table`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distcount_config._rollup import RollupTier


@dataclass(frozen=True)
class MetricsSettings:
    """Where the services' metrics go, and how often."""

    reporter: str  # off, statsd, dogstatsd or console
    statsd_host: str
    statsd_port: int
    interval_ms: int
    sample_rate: float  # the chance that an event of a per-event metric is timed
    tags: tuple[str, ...]  # DogStatsD constant tags, "key:value"


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client talks to the brokers (`kafka_client_options` applies it)."""

    protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str | None
    sasl_password: str | None = field(repr=False)
    ssl_cafile: Path | None  # None: the system's CAs
    ssl_certfile: Path | None
    ssl_keyfile: Path | None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")


@dataclass(frozen=True)
class Settings:
    """What the services and the `distcount` commands are given; nothing of the local stack."""

    kafka_bootstrap: str
    database_url: str = field(repr=False)  # may hold a password
    # as `distcount migrate` logs in: the schema's owner; the services need not know it
    migrate_database_url: str = field(repr=False)
    topic: str
    dlq_topic: str
    partitions: int
    group_id: str
    flush_interval_ms: int
    bucket_ms: int
    http_host: str
    http_port: int
    http_reuse_port: bool  # share the port with other ingress processes (SO_REUSEPORT)
    ingress_url: str  # where the commands that read find the ingress
    metrics: MetricsSettings
    max_live_entries: int
    stall_retry_ms: int
    read_after_timeout_ms: int
    produce_timeout_ms: int
    produce_compression: str | None  # a Kafka codec name, or None
    max_inflight_sends: int
    max_body_bytes: int
    http_header_timeout_s: float
    http_body_timeout_s: float
    http_max_connections: int
    idempotency_window_s: int
    log_level: str
    log_format: str  # text or json
    migrations_dir: Path | None  # None: those shipped with distcount-store
    rollup: tuple[RollupTier, ...]  # finest first; empty: no rollup
    compact_interval_ms: int
    # SHA-256 digests (lowercase hex) of the bearer tokens of each scope; both empty: no
    # access control
    write_token_hashes: tuple[str, ...] = field(repr=False)
    read_token_hashes: tuple[str, ...] = field(repr=False)
    token: str | None = field(repr=False)  # what the commands that read send to the ingress
    kafka_security: KafkaSecurity

    @property
    def access_control(self) -> bool:
        return bool(self.write_token_hashes or self.read_token_hashes)


@dataclass(frozen=True)
class DevSettings:
    """Where and how `distcount dev` runs the local stack."""

    state_dir: Path
    cache_dir: Path
    kafka_version: str
    maven_repo_url: str | None  # None: the repositories of Maven's own settings
    kafka_port: int
    kafka_controller_port: int
    postgres_port: int
    stop_timeout_s: float
    java_home: Path | None
    # Set when the user pointed DISTCOUNT_KAFKA_BOOTSTRAP / DISTCOUNT_DATABASE_URL elsewhere:
    # the stack then uses those services and starts only the rest.
    external_kafka: bool
    external_postgres: bool
    # unset: the stack's services print their metrics on the console, every event timed
    metrics_chosen: bool
    sample_rate_chosen: bool

    @property
    def local_kafka_bootstrap(self) -> str:
        return local_kafka_bootstrap(self.kafka_port)

    def local_database_url(self, database: str = "distcount") -> str:
        return local_database_url(self.postgres_port, database)

    def local_migrate_database_url(self, database: str = "distcount") -> str:
        return local_migrate_database_url(self.postgres_port, database)


# The local stack's endpoints: the services' defaults when no other is given, so that
# `distcount ingress` next to `distcount dev up` needs no setting at all.


# the local stack's roles' passwords: public (the README shows them), so printed as they are
LOCAL_PASSWORDS = ("distcount", "distcount_admin")


def local_kafka_bootstrap(kafka_port: int) -> str:
    return f"127.0.0.1:{kafka_port}"


def local_database_url(postgres_port: int, database: str = "distcount") -> str:
    """As the local stack's services log in: a role that may only read and write the data."""
    return f"postgresql://distcount:distcount@127.0.0.1:{postgres_port}/{database}"


def local_migrate_database_url(postgres_port: int, database: str = "distcount") -> str:
    """As the local stack's superuser, which owns the schema and applies the migrations."""
    return f"postgresql://distcount_admin:distcount_admin@127.0.0.1:{postgres_port}/{database}"


def project_root() -> Path | None:
    """The source checkout this package runs from, if it runs from one."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "migrations").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    return None
