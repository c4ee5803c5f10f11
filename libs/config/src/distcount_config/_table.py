"""Every DISTCOUNT_* variable, declared once: its kind and bounds, default, help and scope.

The README's configuration tables are generated from `SETTINGS`, in its order
(`python -m distcount_config --write README.md`), and a unit test fails when they differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from distcount_config._declare import Derived, Rule, Scope, Setting, Values
from distcount_config._kinds import (
    Bootstrap,
    Choice,
    ChoiceOrNone,
    DatabaseUrl,
    File,
    Folder,
    Fraction,
    Host,
    HttpUrl,
    Integer,
    Name,
    OrUnset,
    RepositoryUrl,
    Seconds,
    Switch,
    Tags,
    TokenHashes,
    Topic,
    Version,
    port,
)
from distcount_config._rollup import Rollup, RollupTier
from distcount_config._settings import (
    local_database_url,
    local_kafka_bootstrap,
    local_migrate_database_url,
    project_root,
)

METRICS_REPORTERS: Final = ("off", "statsd", "dogstatsd", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")
CODECS: Final = ("gzip", "snappy", "lz4", "zstd")  # every codec Kafka defines
KAFKA_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

DEFAULT_ROLLUP: Final = "1h@1d,1d@30d"

SERVICES, DEV = Scope.SERVICES, Scope.DEV


def _in_checkout(name: str) -> Path:
    return (project_root() or Path.cwd()) / name


def _cache_dir(v: Values) -> Path:
    return Path(v.machine("XDG_CACHE_HOME") or Path.home() / ".cache") / "distcount"


# Functions, not lambdas, for the defaults that follow the local stack's settings: those are
# declared further down, where a lambda's types could not be inferred.
def _local_bootstrap(v: Values) -> str:
    return local_kafka_bootstrap(v.get(DEV_KAFKA_PORT))


def _local_database_url(v: Values) -> str:
    return local_database_url(v.get(DEV_POSTGRES_PORT))


def _rollup(v: Values) -> tuple[RollupTier, ...]:
    # Services whose bucket width does not divide an hour would otherwise refuse to start over a
    # setting they never chose: they get no rollup instead (`distcount compact` says so).
    tiers = Rollup().parse(DEFAULT_ROLLUP)
    return tiers if all(tier.width_ms % v.get(BUCKET_MS) == 0 for tier in tiers) else ()


def _reachable(host: str) -> str:
    """Where a client reaches a server listening on `host`: every address is also loopback."""
    return {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)


def _migrate_database_url(v: Values) -> str:
    # With a database of the user's, migrating as the services' role stays possible (one role
    # for everything); without one, both URLs are the local stack's, each with its own role.
    if v.is_set(DATABASE_URL):
        return v.get(DATABASE_URL)
    return local_migrate_database_url(v.get(DEV_POSTGRES_PORT))


# -- the services' settings ------------------------------------------------------------------

KAFKA_BOOTSTRAP: Final = Setting(
    "KAFKA_BOOTSTRAP",
    Bootstrap(),
    Derived(
        _local_bootstrap,
        "`127.0.0.1:9092`, the local stack's broker (its port: `DISTCOUNT_DEV_KAFKA_PORT`)",
    ),
    "Kafka bootstrap servers; pointed at another broker than the local stack's, `dev up` uses "
    "that one instead of starting its own",
    SERVICES,
    "kafka_bootstrap",
    exported=True,
)
DATABASE_URL: Final = Setting(
    "DATABASE_URL",
    DatabaseUrl(),
    Derived(
        _local_database_url,
        "`postgresql://distcount:distcount@127.0.0.1:5432/distcount`, the local stack's "
        "(its port: `DISTCOUNT_DEV_POSTGRES_PORT`)",
    ),
    "the PostgreSQL database, as the services log in; pointed at another server than the local "
    "stack's, `dev up` uses that one instead of starting its own",
    SERVICES,
    "database_url",
    secret=True,
    exported=True,
)
MIGRATE_DATABASE_URL: Final = Setting(
    "MIGRATE_DATABASE_URL",
    DatabaseUrl(),
    Derived(
        _migrate_database_url,
        "`DISTCOUNT_DATABASE_URL` when that is set, else "
        "`postgresql://distcount_admin:distcount_admin@127.0.0.1:5432/distcount`",
    ),
    "the same database, as `distcount migrate` (and `dev up`) applies the migrations: the "
    "schema's owner. Set it only together with `DISTCOUNT_DATABASE_URL`, whose user it grants "
    "the services' privileges",
    SERVICES,
    "migrate_database_url",
    secret=True,
    exported=True,
)
TOPIC: Final = Setting(
    "TOPIC",
    Topic(),
    "distcount.increments",
    "the topic increments are produced to",
    SERVICES,
    "topic",
    exported=True,
)
DLQ_TOPIC: Final = Setting(
    "DLQ_TOPIC",
    Topic(),
    Derived(lambda v: f"{v.get(TOPIC)}.dlq", "`<topic>.dlq`"),
    "where records that break the contract go",
    SERVICES,
    "dlq_topic",
)
PARTITIONS: Final = Setting(
    "PARTITIONS",
    Integer(1, 10_000),
    6,
    "partitions when `dev up` creates the topics",
    SERVICES,
    "partitions",
)
GROUP_ID: Final = Setting(
    "GROUP_ID",
    Name("a consumer group name", 255),
    "distcount-aggregator",
    "the aggregators' consumer group",
    SERVICES,
    "group_id",
)
FLUSH_INTERVAL_MS: Final = Setting(
    "FLUSH_INTERVAL_MS",
    Integer(10, 3_600_000, "milliseconds"),
    5000,
    "how often aggregators flush to PostgreSQL",
    SERVICES,
    "flush_interval_ms",
)
BUCKET_MS: Final = Setting(
    "BUCKET_MS",
    Integer(1, 86_400_000, "milliseconds"),
    Derived(lambda v: v.get(FLUSH_INTERVAL_MS), "the flush interval"),
    "width of a time bucket in the event log",
    SERVICES,
    "bucket_ms",
)
HTTP_HOST: Final = Setting(
    "HTTP_HOST", Host(), "127.0.0.1", "the address the ingress listens on", SERVICES, "http_host"
)
HTTP_PORT: Final = Setting(
    "HTTP_PORT",
    port(),
    3333,
    "the port the ingress listens on",
    SERVICES,
    "http_port",
    exported=True,
)
HTTP_REUSE_PORT: Final = Setting(
    "HTTP_REUSE_PORT",
    Switch(),
    False,
    "`on`: the ingress binds its port with SO_REUSEPORT, so that several ingress processes on "
    "one machine share it and the kernel spreads connections among them (what `distcount dev "
    "up --ingress-workers N` does; Linux spreads them, macOS does not)",
    SERVICES,
    "http_reuse_port",
)
INGRESS_URL: Final = Setting(
    "INGRESS_URL",
    HttpUrl(),
    Derived(
        lambda v: f"http://{_reachable(v.get(HTTP_HOST))}:{v.get(HTTP_PORT)}",
        "`http://<DISTCOUNT_HTTP_HOST>:<DISTCOUNT_HTTP_PORT>`, the ingress these settings run "
        "(`127.0.0.1` for a host of `0.0.0.0`)",
    ),
    "the ingress `distcount get`, `history` and `top` read through (its HTTP API)",
    SERVICES,
    "ingress_url",
    exported=True,
)
METRICS: Final = Setting(
    "METRICS",
    Choice(METRICS_REPORTERS),
    "statsd",
    "where metrics go: `statsd`, `dogstatsd` (with tags), `console` (standard error) or `off`; "
    "`dev up` runs its services with `console` unless this is set. See [Metrics](#metrics)",
    SERVICES,
    "metrics.reporter",
)
STATSD_HOST: Final = Setting(
    "STATSD_HOST",
    Host(),
    "127.0.0.1",
    "where StatsD metrics go (UDP)",
    SERVICES,
    "metrics.statsd_host",
)
STATSD_PORT: Final = Setting(
    "STATSD_PORT", port("UDP"), 8125, "the StatsD port", SERVICES, "metrics.statsd_port"
)
METRICS_INTERVAL_MS: Final = Setting(
    "METRICS_INTERVAL_MS",
    Integer(10, 3_600_000, "milliseconds"),
    5000,
    "how often metrics are sent (or printed)",
    SERVICES,
    "metrics.interval_ms",
)
METRICS_SAMPLE_RATE: Final = Setting(
    "METRICS_SAMPLE_RATE",
    Fraction(0.0001, 1, example=0.01),
    0.01,
    "share of per-event timings kept, each event drawn with this chance; `1` under `dev up` "
    "unless this or `DISTCOUNT_METRICS` is set",
    SERVICES,
    "metrics.sample_rate",
)
METRICS_TAGS: Final = Setting(
    "METRICS_TAGS",
    Tags(),
    (),
    "constant DogStatsD tags added to every metric",
    SERVICES,
    "metrics.tags",
)
MAX_LIVE_ENTRIES: Final = Setting(
    "MAX_LIVE_ENTRIES",
    Integer(1, 100_000_000),
    1_000_000,
    "in-memory bucket entries per aggregator before an early flush",
    SERVICES,
    "max_live_entries",
)
STALL_RETRY_MS: Final = Setting(
    "STALL_RETRY_MS",
    Integer(100, 3_600_000, "milliseconds"),
    30_000,
    "how often an aggregator tries a [stalled partition](#stalled-partitions) again",
    SERVICES,
    "stall_retry_ms",
)
READ_AFTER_TIMEOUT_MS: Final = Setting(
    "READ_AFTER_TIMEOUT_MS",
    Integer(0, 60_000, "milliseconds"),
    10_000,
    "how long a read with `after=TOKEN` waits for the write to be flushed before it answers 202",
    SERVICES,
    "read_after_timeout_ms",
)
PRODUCE_TIMEOUT_MS: Final = Setting(
    "PRODUCE_TIMEOUT_MS",
    Integer(1, 600_000, "milliseconds"),
    5000,
    "how long the ingress waits for Kafka before answering 503",
    SERVICES,
    "produce_timeout_ms",
)
PRODUCE_COMPRESSION: Final = Setting(
    "PRODUCE_COMPRESSION",
    ChoiceOrNone("none", CODECS),
    None,
    "how the ingress compresses the batches it sends to Kafka (see below)",
    SERVICES,
    "produce_compression",
)
MAX_INFLIGHT_SENDS: Final = Setting(
    "MAX_INFLIGHT_SENDS",
    Integer(1, 10_000_000),
    10_000,
    "sends the ingress keeps in flight before answering 503",
    SERVICES,
    "max_inflight_sends",
)
MAX_BODY_BYTES: Final = Setting(
    "MAX_BODY_BYTES",
    Integer(64, 1 << 30, "bytes"),
    1_048_576,
    "larger request bodies get 413",
    SERVICES,
    "max_body_bytes",
)
HTTP_HEADER_TIMEOUT_S: Final = Setting(
    "HTTP_HEADER_TIMEOUT_S",
    Seconds(),
    10.0,
    "how long a client may take to send a request's line and headers, from the connection's "
    "start or, on a kept-alive connection, from the end of the previous request: slower ones "
    "are disconnected",
    SERVICES,
    "http_header_timeout_s",
)
HTTP_BODY_TIMEOUT_S: Final = Setting(
    "HTTP_BODY_TIMEOUT_S",
    Seconds(),
    30.0,
    "how long a client may take to send a request's body once its headers are in: slower ones "
    "get 408 and are disconnected",
    SERVICES,
    "http_body_timeout_s",
)
HTTP_MAX_CONNECTIONS: Final = Setting(
    "HTTP_MAX_CONNECTIONS",
    Integer(1, 1_000_000),
    2048,
    "open client connections an ingress process keeps at most; past it new connections are "
    "answered 503 and closed",
    SERVICES,
    "http_max_connections",
)
IDEMPOTENCY_WINDOW_S: Final = Setting(
    "IDEMPOTENCY_WINDOW_S",
    Integer(1, 366 * 86_400, "seconds"),
    86_400,
    "how long the aggregators remember an increment's idempotency id (`Idempotency-Key`, or a "
    "record's `id`): a record with an id seen within it is not counted again",
    SERVICES,
    "idempotency_window_s",
)
LOG_LEVEL: Final = Setting(
    "LOG_LEVEL",
    Choice(LOG_LEVELS),
    "info",
    "the least severe log records written",
    SERVICES,
    "log_level",
)
LOG_FORMAT: Final = Setting(
    "LOG_FORMAT",
    Choice(LOG_FORMATS),
    "text",
    "one log record per line on standard error: readable text, or a JSON object with the same "
    "fields (see [Logs](#logs))",
    SERVICES,
    "log_format",
)
MIGRATIONS_DIR: Final = Setting(
    "MIGRATIONS_DIR",
    OrUnset(Folder("a folder of NNNN_name.sql files")),
    None,
    "the SQL migrations `distcount migrate` applies; unset, those shipped inside the "
    "distcount-store package (the repository's `migrations/`)",
    SERVICES,
    "migrations_dir",
)
ROLLUP: Final = Setting(
    "ROLLUP",
    Rollup(),
    Derived(_rollup, f"`{DEFAULT_ROLLUP}` (`none` when `DISTCOUNT_BUCKET_MS` does not divide 1h)"),
    "how `distcount compact` merges old rows of the event log: those whose bucket is older than "
    "an age into buckets of its width; totals, and history at steps that are multiples of the "
    "width, stay the same. See [Retention and rollup](#retention-and-rollup)",
    SERVICES,
    "rollup",
)
COMPACT_INTERVAL_MS: Final = Setting(
    "COMPACT_INTERVAL_MS",
    Integer(1000, 604_800_000, "milliseconds"),
    3_600_000,
    "how often `distcount compact --schedule` compacts",
    SERVICES,
    "compact_interval_ms",
)

# -- access control and secured connections (see the README's Access control) ------------------

WRITE_TOKEN_HASHES: Final = Setting(
    "WRITE_TOKEN_HASHES",
    TokenHashes(),
    (),
    "the hashes of the bearer tokens that may write (`POST /increment`, `POST /increments`). "
    "With this and `DISTCOUNT_READ_TOKEN_HASHES` both unset the ingress asks for no token; with "
    "either set, every route but the health checks needs a token of its scope. See "
    "[Access control](#access-control)",
    SERVICES,
    "write_token_hashes",
    secret=True,
)
READ_TOKEN_HASHES: Final = Setting(
    "READ_TOKEN_HASHES",
    TokenHashes(),
    (),
    "the hashes of the bearer tokens that may read (every other route but `/health/live` and "
    "`/health/ready`); a token in both lists may do both",
    SERVICES,
    "read_token_hashes",
    secret=True,
)
TOKEN: Final = Setting(
    "TOKEN",
    OrUnset(Name("a bearer token", 1024)),
    None,
    "the bearer token `distcount get`, `history` and `top` send to the ingress",
    SERVICES,
    "token",
    secret=True,
)
KAFKA_SECURITY_PROTOCOL: Final = Setting(
    "KAFKA_SECURITY_PROTOCOL",
    Choice(KAFKA_PROTOCOLS),
    "PLAINTEXT",
    "how every Kafka client of distcount talks to the brokers: TLS (`SSL`), SASL "
    "authentication, or both",
    SERVICES,
    "kafka_security.protocol",
)
KAFKA_SASL_MECHANISM: Final = Setting(
    "KAFKA_SASL_MECHANISM",
    Choice(SASL_MECHANISMS),
    "PLAIN",
    "the SASL mechanism, with a `SASL_*` protocol",
    SERVICES,
    "kafka_security.sasl_mechanism",
)
KAFKA_SASL_USERNAME: Final = Setting(
    "KAFKA_SASL_USERNAME",
    OrUnset(Name("a user name", 255)),
    None,
    "the SASL user, with a `SASL_*` protocol",
    SERVICES,
    "kafka_security.sasl_username",
)
KAFKA_SASL_PASSWORD: Final = Setting(
    "KAFKA_SASL_PASSWORD",
    OrUnset(Name("a password", 1024)),
    None,
    "the SASL user's password, with a `SASL_*` protocol",
    SERVICES,
    "kafka_security.sasl_password",
    secret=True,
)
KAFKA_SSL_CAFILE: Final = Setting(
    "KAFKA_SSL_CAFILE",
    OrUnset(File("a PEM file of CA certificates")),
    None,
    "the CAs the brokers' certificates are checked against, with `SSL` or `SASL_SSL`; unset, "
    "the system's",
    SERVICES,
    "kafka_security.ssl_cafile",
)
KAFKA_SSL_CERTFILE: Final = Setting(
    "KAFKA_SSL_CERTFILE",
    OrUnset(File("a PEM certificate file")),
    None,
    "the client certificate, for brokers that authenticate clients by TLS",
    SERVICES,
    "kafka_security.ssl_certfile",
)
KAFKA_SSL_KEYFILE: Final = Setting(
    "KAFKA_SSL_KEYFILE",
    OrUnset(File("a PEM private key file, unencrypted")),
    None,
    "the client certificate's key, when `DISTCOUNT_KAFKA_SSL_CERTFILE` does not hold it too",
    SERVICES,
    "kafka_security.ssl_keyfile",
)

# -- the local stack's settings (`distcount dev`) --------------------------------------------

DEV_DIR: Final = Setting(
    "DEV_DIR",
    Folder(),
    Derived(lambda v: _in_checkout(".distcount"), "`.distcount/` of the checkout"),
    "the local stack's state folder",
    DEV,
    "state_dir",
)
DEV_CACHE_DIR: Final = Setting(
    "DEV_CACHE_DIR",
    Folder(),
    Derived(_cache_dir, "`$XDG_CACHE_HOME/distcount` or `~/.cache/distcount`"),
    "downloaded jars (outside the repository)",
    DEV,
    "cache_dir",
)
DEV_KAFKA_VERSION: Final = Setting(
    "DEV_KAFKA_VERSION",
    Version(),
    "4.1.1",
    "the Apache Kafka broker version `dev up` runs",
    DEV,
    "kafka_version",
)
DEV_MAVEN_REPO: Final = Setting(
    "DEV_MAVEN_REPO",
    OrUnset(RepositoryUrl()),
    None,
    "a Maven repository to fetch the broker's jars from instead of the ones Maven's own "
    "settings name (`~/.m2/settings.xml`, else its default)",
    DEV,
    "maven_repo_url",
)
DEV_KAFKA_PORT: Final = Setting(
    "DEV_KAFKA_PORT", port(), 9092, "the local broker's port", DEV, "kafka_port"
)
DEV_KAFKA_CONTROLLER_PORT: Final = Setting(
    "DEV_KAFKA_CONTROLLER_PORT",
    port(),
    9093,
    "the local broker's controller port",
    DEV,
    "kafka_controller_port",
)
DEV_POSTGRES_PORT: Final = Setting(
    "DEV_POSTGRES_PORT", port(), 5432, "the local PostgreSQL's port", DEV, "postgres_port"
)
DEV_STOP_TIMEOUT_S: Final = Setting(
    "DEV_STOP_TIMEOUT_S",
    Seconds(),
    30.0,
    "how long `dev down` waits after SIGTERM before SIGKILL",
    DEV,
    "stop_timeout_s",
)

SETTINGS: Final[tuple[Setting[Any], ...]] = (
    KAFKA_BOOTSTRAP,
    DATABASE_URL,
    MIGRATE_DATABASE_URL,
    TOPIC,
    DLQ_TOPIC,
    PARTITIONS,
    GROUP_ID,
    FLUSH_INTERVAL_MS,
    BUCKET_MS,
    HTTP_HOST,
    HTTP_PORT,
    HTTP_REUSE_PORT,
    INGRESS_URL,
    METRICS,
    STATSD_HOST,
    STATSD_PORT,
    METRICS_INTERVAL_MS,
    METRICS_SAMPLE_RATE,
    METRICS_TAGS,
    MAX_LIVE_ENTRIES,
    STALL_RETRY_MS,
    READ_AFTER_TIMEOUT_MS,
    PRODUCE_TIMEOUT_MS,
    PRODUCE_COMPRESSION,
    MAX_INFLIGHT_SENDS,
    MAX_BODY_BYTES,
    HTTP_HEADER_TIMEOUT_S,
    HTTP_BODY_TIMEOUT_S,
    HTTP_MAX_CONNECTIONS,
    IDEMPOTENCY_WINDOW_S,
    LOG_LEVEL,
    LOG_FORMAT,
    MIGRATIONS_DIR,
    ROLLUP,
    COMPACT_INTERVAL_MS,
    WRITE_TOKEN_HASHES,
    READ_TOKEN_HASHES,
    TOKEN,
    KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_MECHANISM,
    KAFKA_SASL_USERNAME,
    KAFKA_SASL_PASSWORD,
    KAFKA_SSL_CAFILE,
    KAFKA_SSL_CERTFILE,
    KAFKA_SSL_KEYFILE,
    DEV_DIR,
    DEV_CACHE_DIR,
    DEV_KAFKA_VERSION,
    DEV_MAVEN_REPO,
    DEV_KAFKA_PORT,
    DEV_KAFKA_CONTROLLER_PORT,
    DEV_POSTGRES_PORT,
    DEV_STOP_TIMEOUT_S,
)

RULES: Final = (
    Rule(
        SERVICES,
        # `migrate` grants the services' role, the user of DISTCOUNT_DATABASE_URL: left to its
        # default, that names the local stack's role, not one of the database migrated
        lambda v: v.is_set(MIGRATE_DATABASE_URL) and not v.is_set(DATABASE_URL),
        "DISTCOUNT_MIGRATE_DATABASE_URL is set but DISTCOUNT_DATABASE_URL is not: set both, to "
        "the same database (the migrations grant the user of DISTCOUNT_DATABASE_URL what the "
        "services need)",
    ),
    Rule(
        SERVICES,
        lambda v: any(tier.width_ms % v.get(BUCKET_MS) for tier in v.get(ROLLUP)),
        "each width of DISTCOUNT_ROLLUP must be a multiple of DISTCOUNT_BUCKET_MS (the flush "
        "interval unless set), so that a rolled-up bucket holds whole buckets of the event log",
    ),
    Rule(
        SERVICES,
        lambda v: (
            v.get(KAFKA_SECURITY_PROTOCOL).startswith("SASL_")
            and not (v.is_set(KAFKA_SASL_USERNAME) and v.is_set(KAFKA_SASL_PASSWORD))
        ),
        "DISTCOUNT_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT or SASL_SSL: set "
        "DISTCOUNT_KAFKA_SASL_USERNAME and DISTCOUNT_KAFKA_SASL_PASSWORD too",
    ),
    Rule(
        SERVICES,
        lambda v: (
            not v.get(KAFKA_SECURITY_PROTOCOL).startswith("SASL_")
            and (v.is_set(KAFKA_SASL_USERNAME) or v.is_set(KAFKA_SASL_PASSWORD))
        ),
        "DISTCOUNT_KAFKA_SASL_USERNAME or DISTCOUNT_KAFKA_SASL_PASSWORD is set, but "
        "DISTCOUNT_KAFKA_SECURITY_PROTOCOL is neither SASL_PLAINTEXT nor SASL_SSL: they would "
        "not be sent",
    ),
    Rule(
        SERVICES,
        lambda v: (
            not v.get(KAFKA_SECURITY_PROTOCOL).endswith("SSL")
            and any(v.is_set(s) for s in (KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE))
        ),
        "a DISTCOUNT_KAFKA_SSL_* file is set, but DISTCOUNT_KAFKA_SECURITY_PROTOCOL is neither "
        "SSL nor SASL_SSL: it would not be used",
    ),
    Rule(
        SERVICES,
        lambda v: v.is_set(KAFKA_SSL_KEYFILE) and not v.is_set(KAFKA_SSL_CERTFILE),
        "DISTCOUNT_KAFKA_SSL_KEYFILE is set without DISTCOUNT_KAFKA_SSL_CERTFILE, the "
        "certificate it is the key of",
    ),
    Rule(
        DEV,
        lambda v: (
            len({v.get(s) for s in (DEV_KAFKA_PORT, DEV_KAFKA_CONTROLLER_PORT, DEV_POSTGRES_PORT)})
            < 3
        ),
        "DISTCOUNT_DEV_KAFKA_PORT, DISTCOUNT_DEV_KAFKA_CONTROLLER_PORT and "
        "DISTCOUNT_DEV_POSTGRES_PORT must be three different ports",
    ),
)
