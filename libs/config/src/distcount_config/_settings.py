"""Every DISTCOUNT_* environment variable, parsed and validated in one place.

Nothing else in distcount reads the environment: entry points call `load()` once and pass the
settings down. A bad value raises `ConfigError` naming the variable and what it accepts.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit

from distcount_config._errors import ConfigError

PREFIX: Final = "DISTCOUNT_"
INT64_MAX: Final = 2**63 - 1

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9._-]+$|^\[[0-9A-Fa-f:.]+\]$")
_LOG_LEVELS = ("debug", "info", "warning", "error")
# every codec Kafka defines
_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
METRICS_REPORTERS: Final = ("off", "statsd", "dogstatsd", "console")
_TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:/-]{0,199}$")


@dataclass(frozen=True)
class DevSettings:
    """Where and how `distcount dev` runs the local stack."""

    state_dir: Path
    cache_dir: Path
    kafka_version: str
    maven_repo_url: str
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
        return f"127.0.0.1:{self.kafka_port}"

    def local_database_url(self, database: str = "distcount") -> str:
        """As the local stack's services log in: a role that may only read and write the data."""
        return f"postgresql://distcount:distcount@127.0.0.1:{self.postgres_port}/{database}"

    def local_migrate_database_url(self, database: str = "distcount") -> str:
        """As the local stack's superuser, which owns the schema and applies the migrations."""
        return (
            "postgresql://distcount_admin:distcount_admin@127.0.0.1:"
            f"{self.postgres_port}/{database}"
        )


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
class Settings:
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
    metrics: MetricsSettings
    max_live_entries: int
    stall_retry_ms: int
    produce_timeout_ms: int
    produce_compression: str | None  # a Kafka codec name, or None
    max_inflight_sends: int
    max_body_bytes: int
    log_level: str
    migrations_dir: Path
    dev: DevSettings


T = TypeVar("T")


class _Reader:
    """Reads typed values out of the environment and remembers which names are known."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env = {k: v for k, v in environ.items() if k.startswith(PREFIX)}
        self.known: set[str] = set()

    def is_set(self, name: str) -> bool:
        return self._env.get(PREFIX + name, "").strip() != ""

    def get(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        accepts: str,
        secret: bool = False,
    ) -> T:
        self.known.add(PREFIX + name)
        raw = self._env.get(PREFIX + name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            shown = _without_password(raw) if secret else raw
            raise ConfigError(
                f"{PREFIX}{name}={shown!r} is not valid: expected {accepts}{detail}"
            ) from None

    def check_unknown(self) -> None:
        bare = {name.removeprefix(PREFIX): name for name in self.known}
        for name in sorted(set(self._env) - self.known):
            guess = difflib.get_close_matches(name.removeprefix(PREFIX), bare, n=1, cutoff=0.75)
            hint = f"; did you mean {bare[guess[0]]}?" if guess else ""
            raise ConfigError(f"{name} is not a distcount setting{hint}")


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _int_in(low: int, high: int = INT64_MAX) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.replace("_", ""), 10)
        if not low <= value <= high:
            raise ValueError(f"out of range {low}..{high}")
        return value

    return parse


def _port(raw: str) -> int:
    return _int_in(1, 65535)(raw)


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a finite number above 0")
    return value


def _host(raw: str) -> str:
    if not _HOST_RE.fullmatch(raw):
        raise ValueError("not a host name or address")
    return raw


def _bootstrap(raw: str) -> str:
    for server in raw.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host:
            raise ValueError(f"{server.strip()!r} has no port")
        _host(host)
        _port(port)
    return ",".join(s.strip() for s in raw.split(","))


def _database_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("the scheme must be postgresql://")
    if not parts.hostname:
        raise ValueError("no host")
    if parts.path.strip("/") == "":
        raise ValueError("no database name")
    _ = parts.port  # raises ValueError for a bad port
    return raw


def _topic(raw: str) -> str:
    if not _TOPIC_RE.fullmatch(raw) or raw in (".", ".."):
        raise ValueError("1..249 characters of letters, digits, '.', '_' and '-'")
    return raw


def _group(raw: str) -> str:
    if len(raw) > 255:
        raise ValueError("longer than 255 characters")
    return raw


def _codec(name: str) -> str | None:
    return None if name == "none" else name


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError("")
        return raw.lower()

    return parse


def _sample_rate(raw: str) -> float:
    rate = float(raw)
    if not (0.0001 <= rate <= 1):
        raise ValueError("out of range 0.0001..1")
    return rate


def _tags(raw: str) -> tuple[str, ...]:
    tags = tuple(tag.strip() for tag in raw.split(",") if tag.strip())
    for tag in tags:
        if not _TAG_RE.fullmatch(tag):
            raise ValueError(f"{tag!r} is not a tag")
    return tags


def _version(raw: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+", raw):
        raise ValueError("")
    return raw


def _http_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("http", "https", "file"):
        raise ValueError("")
    return raw.rstrip("/")


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def project_root() -> Path | None:
    """The source checkout this package runs from, if it runs from one."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "migrations").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    return None


def _default_cache_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distcount"


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (the process environment by default)."""
    env = os.environ if environ is None else environ
    r = _Reader(env)
    root = project_root()

    dev = DevSettings(
        state_dir=r.get(
            "DEV_DIR",
            (root or Path.cwd()) / ".distcount",
            _path,
            "a folder path",
        ),
        cache_dir=r.get("DEV_CACHE_DIR", _default_cache_dir(env), _path, "a folder path"),
        kafka_version=r.get("DEV_KAFKA_VERSION", "4.1.1", _version, "a version such as 4.1.1"),
        maven_repo_url=r.get(
            "DEV_MAVEN_REPO",
            "https://repo.maven.apache.org/maven2",
            _http_url,
            "an http(s):// or file:// URL of a Maven repository",
        ),
        kafka_port=r.get("DEV_KAFKA_PORT", 9092, _port, "a TCP port 1..65535"),
        kafka_controller_port=r.get(
            "DEV_KAFKA_CONTROLLER_PORT", 9093, _port, "a TCP port 1..65535"
        ),
        postgres_port=r.get("DEV_POSTGRES_PORT", 5432, _port, "a TCP port 1..65535"),
        stop_timeout_s=r.get("DEV_STOP_TIMEOUT_S", 30.0, _positive_float, "seconds, above 0"),
        java_home=Path(env["JAVA_HOME"]) if env.get("JAVA_HOME") else None,
        external_kafka=r.is_set("KAFKA_BOOTSTRAP"),
        external_postgres=r.is_set("DATABASE_URL"),
        metrics_chosen=r.is_set("METRICS"),
        sample_rate_chosen=r.is_set("METRICS_SAMPLE_RATE"),
    )
    if len({dev.kafka_port, dev.kafka_controller_port, dev.postgres_port}) < 3:
        raise ConfigError(
            "DISTCOUNT_DEV_KAFKA_PORT, DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT and "
            "DISTCOUNT_DEV_POSTGRES_PORT must be three different ports"
        )

    database_url = r.get(
        "DATABASE_URL",
        dev.local_database_url(),
        _database_url,
        "postgresql://user:password@host:port/database",
        secret=True,
    )
    # Without a database of the user's, both URLs are the local stack's, each with its own role.
    # With one, migrating as the services' role stays possible (one role for everything), so
    # the migration URL defaults to it.
    migrate_database_url = r.get(
        "MIGRATE_DATABASE_URL",
        database_url if dev.external_postgres else dev.local_migrate_database_url(),
        _database_url,
        "postgresql://user:password@host:port/database",
        secret=True,
    )
    if r.is_set("MIGRATE_DATABASE_URL") and not dev.external_postgres:
        # `migrate` grants the services' role, the user of DISTCOUNT_DATABASE_URL: left to its
        # default, that names the local stack's role, not one of the database migrated
        raise ConfigError(
            "DISTCOUNT_MIGRATE_DATABASE_URL is set but DISTCOUNT_DATABASE_URL is not: set both, "
            "to the same database (the migrations grant the user of DISTCOUNT_DATABASE_URL "
            "what the services need)"
        )
    topic = r.get("TOPIC", "distcount.increments", _topic, "a Kafka topic name")
    flush_interval_ms = r.get(
        "FLUSH_INTERVAL_MS", 5000, _int_in(10, 3_600_000), "milliseconds, 10..3600000"
    )
    settings = Settings(
        kafka_bootstrap=r.get(
            "KAFKA_BOOTSTRAP",
            dev.local_kafka_bootstrap,
            _bootstrap,
            "host:port[,host:port...]",
        ),
        database_url=database_url,
        migrate_database_url=migrate_database_url,
        topic=topic,
        dlq_topic=r.get("DLQ_TOPIC", f"{topic}.dlq", _topic, "a Kafka topic name"),
        partitions=r.get("PARTITIONS", 6, _int_in(1, 10_000), "an integer 1..10000"),
        group_id=r.get("GROUP_ID", "distcount-aggregator", _group, "a consumer group name"),
        flush_interval_ms=flush_interval_ms,
        bucket_ms=r.get(
            "BUCKET_MS", flush_interval_ms, _int_in(1, 86_400_000), "milliseconds, 1..86400000"
        ),
        http_host=r.get("HTTP_HOST", "127.0.0.1", _host, "a host name or address"),
        http_port=r.get("HTTP_PORT", 3333, _port, "a TCP port 1..65535"),
        metrics=MetricsSettings(
            reporter=r.get(
                "METRICS", "statsd", _choice(*METRICS_REPORTERS), " or ".join(METRICS_REPORTERS)
            ),
            statsd_host=r.get("STATSD_HOST", "127.0.0.1", _host, "a host name or address"),
            statsd_port=r.get("STATSD_PORT", 8125, _port, "a UDP port 1..65535"),
            interval_ms=r.get(
                "METRICS_INTERVAL_MS", 5000, _int_in(10, 3_600_000), "milliseconds, 10..3600000"
            ),
            sample_rate=r.get(
                "METRICS_SAMPLE_RATE", 0.01, _sample_rate, "a fraction 0.0001..1, such as 0.01"
            ),
            tags=r.get(
                "METRICS_TAGS",
                (),
                _tags,
                "comma-separated DogStatsD tags such as env:prod,region:eu (letters, digits, "
                "_ . : / -, starting with a letter)",
            ),
        ),
        max_live_entries=r.get(
            "MAX_LIVE_ENTRIES", 1_000_000, _int_in(1, 100_000_000), "an integer 1..100000000"
        ),
        stall_retry_ms=r.get(
            "STALL_RETRY_MS", 30_000, _int_in(100, 3_600_000), "milliseconds, 100..3600000"
        ),
        produce_timeout_ms=r.get(
            "PRODUCE_TIMEOUT_MS", 5000, _int_in(1, 600_000), "milliseconds, 1..600000"
        ),
        produce_compression=_codec(
            r.get("PRODUCE_COMPRESSION", "none", _choice(*_CODECS), " or ".join(_CODECS))
        ),
        max_inflight_sends=r.get(
            "MAX_INFLIGHT_SENDS", 10_000, _int_in(1, 10_000_000), "an integer 1..10000000"
        ),
        max_body_bytes=r.get(
            "MAX_BODY_BYTES", 1_048_576, _int_in(64, 1 << 30), "bytes, 64..1073741824"
        ),
        log_level=r.get("LOG_LEVEL", "info", _choice(*_LOG_LEVELS), " or ".join(_LOG_LEVELS)),
        migrations_dir=r.get(
            "MIGRATIONS_DIR",
            (root or Path.cwd()) / "migrations",
            _path,
            "a folder of NNNN_name.sql files",
        ),
        dev=dev,
    )
    if len(settings.dlq_topic) > 249:
        raise ConfigError(
            f"the dead-letter topic {settings.dlq_topic[:40]}… is longer than Kafka's 249 "
            "characters; shorten DISTCOUNT_TOPIC or set DISTCOUNT_DLQ_TOPIC"
        )
    r.check_unknown()
    return settings
