"""Unit tests for distcount_config.load: defaults, overrides and the errors for bad values.
test_config_dev.py does the same for load_dev; test_config_table.py checks the table itself, and
what is generated from it.

Every test passes an explicit mapping as the environment; os.environ is never read or changed.
"""

from __future__ import annotations

import operator

import pytest

from distcount_config import ConfigError, DevSettings, Settings, load, load_dev


def _load(**variables: str) -> Settings:
    """load() with only the given DISTCOUNT_* variables set (keys without the prefix)."""
    return load({f"DISTCOUNT_{name}": value for name, value in variables.items()})


def _load_dev(**variables: str) -> DevSettings:
    """load_dev() with only the given DISTCOUNT_* variables set (keys without the prefix)."""
    return load_dev({f"DISTCOUNT_{name}": value for name, value in variables.items()})


# --- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load({})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.http_port == 3333
    assert settings.partitions == 6
    assert settings.flush_interval_ms == 5000
    assert settings.bucket_ms == 5000
    assert settings.topic == "distcount.increments"
    assert settings.dlq_topic == "distcount.increments.dlq"
    assert settings.database_url == "postgresql://distcount:distcount@127.0.0.1:5432/distcount"
    assert settings.migrate_database_url == (
        "postgresql://distcount_admin:distcount_admin@127.0.0.1:5432/distcount"
    )
    assert settings.log_level == "info"
    assert settings.http_host == "127.0.0.1"
    assert settings.group_id == "distcount-aggregator"
    assert settings.metrics.reporter == "statsd"
    assert (settings.metrics.statsd_host, settings.metrics.statsd_port) == ("127.0.0.1", 8125)
    assert settings.metrics.interval_ms == 5000
    assert settings.metrics.sample_rate == 0.01
    assert settings.metrics.tags == ()
    assert settings.log_format == "text"


def test_the_services_settings_hold_nothing_of_the_local_stack() -> None:
    assert not hasattr(load({}), "dev")


def test_variables_without_the_prefix_are_ignored() -> None:
    settings = load({"HTTP_PORT": "not a port", "PATH": "/usr/bin", "HOME": "/root"})
    assert settings.http_port == 3333


def test_empty_value_means_default() -> None:
    assert _load(HTTP_PORT="").http_port == 3333
    assert _load(PARTITIONS="   ").partitions == 6


def test_bucket_ms_defaults_to_flush_interval() -> None:
    settings = _load(FLUSH_INTERVAL_MS="250")
    assert settings.flush_interval_ms == 250
    assert settings.bucket_ms == 250


def test_bucket_ms_can_differ_from_flush_interval() -> None:
    settings = _load(FLUSH_INTERVAL_MS="250", BUCKET_MS="60000")
    assert settings.flush_interval_ms == 250
    assert settings.bucket_ms == 60000


def test_dlq_topic_is_derived_from_topic() -> None:
    assert _load(TOPIC="clicks").dlq_topic == "clicks.dlq"


def test_dlq_topic_can_be_set() -> None:
    settings = _load(TOPIC="clicks", DLQ_TOPIC="dead-letters")
    assert settings.topic == "clicks"
    assert settings.dlq_topic == "dead-letters"


# --- the migrating role -----------------------------------------------------------------------


def test_the_local_stack_migrates_as_a_role_other_than_the_services() -> None:
    settings = load({})
    assert settings.database_url.startswith("postgresql://distcount:distcount@")
    assert settings.migrate_database_url.startswith("postgresql://distcount_admin:distcount_admin@")


def test_migrate_database_url_defaults_to_a_database_url_that_is_set() -> None:
    # one role for everything, as before the roles were split: it still migrates
    url = "postgresql://u:p@db.example:6543/counts"
    assert _load(DATABASE_URL=url).migrate_database_url == url


def test_migrate_database_url_can_be_set() -> None:
    settings = _load(
        DATABASE_URL="postgresql://app:p@db.example/counts",
        MIGRATE_DATABASE_URL="postgresql://owner:q@db.example/counts",
    )
    assert settings.database_url == "postgresql://app:p@db.example/counts"
    assert settings.migrate_database_url == "postgresql://owner:q@db.example/counts"


def test_migrate_database_url_without_database_url_is_an_error() -> None:
    # `migrate` would grant the local stack's role in a database that is not the local one
    with pytest.raises(ConfigError) as info:
        _load(MIGRATE_DATABASE_URL="postgresql://owner:q@db.example/counts")
    message = str(info.value)
    assert "DISTCOUNT_MIGRATE_DATABASE_URL is set but DISTCOUNT_DATABASE_URL is not" in message
    assert "q@" not in message


def test_bad_migrate_database_url_names_it_and_hides_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        _load(
            DATABASE_URL="postgresql://app:p@db.example/counts",
            MIGRATE_DATABASE_URL="mysql://owner:hunter2@db.example/counts",
        )
    message = str(info.value)
    assert "DISTCOUNT_MIGRATE_DATABASE_URL='mysql://owner:***@db.example/counts'" in message
    assert "hunter2" not in message


def test_migrate_database_url_not_in_repr() -> None:
    settings = _load(
        DATABASE_URL="postgresql://app:p@db.example/counts",
        MIGRATE_DATABASE_URL="postgresql://owner:s3cr3t-pw@db.example/counts",
    )
    assert "s3cr3t-pw" not in repr(settings)
    assert "migrate_database_url" not in repr(settings)


# --- valid overrides --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "attribute", "expected"),
    [
        ("HTTP_PORT", "8080", "http_port", 8080),
        ("HTTP_PORT", " 8080 ", "http_port", 8080),
        ("HTTP_PORT", "1", "http_port", 1),
        ("HTTP_PORT", "65535", "http_port", 65535),
        ("PARTITIONS", "1", "partitions", 1),
        ("PARTITIONS", "10000", "partitions", 10000),
        ("FLUSH_INTERVAL_MS", "1_000", "flush_interval_ms", 1000),
        ("MAX_BODY_BYTES", "64", "max_body_bytes", 64),
        ("METRICS_INTERVAL_MS", "250", "metrics.interval_ms", 250),
        ("STATSD_PORT", "9125", "metrics.statsd_port", 9125),
        ("STATSD_HOST", "statsd", "metrics.statsd_host", "statsd"),
        ("METRICS", "DogStatsD", "metrics.reporter", "dogstatsd"),
        ("METRICS", "off", "metrics.reporter", "off"),
        ("METRICS_SAMPLE_RATE", "1", "metrics.sample_rate", 1.0),
        ("METRICS_SAMPLE_RATE", "0.01", "metrics.sample_rate", 0.01),
        ("METRICS_SAMPLE_RATE", "0.25", "metrics.sample_rate", 0.25),
        ("METRICS_TAGS", "env:prod, region:eu-1", "metrics.tags", ("env:prod", "region:eu-1")),
        ("KAFKA_BOOTSTRAP", "kafka:29092", "kafka_bootstrap", "kafka:29092"),
        (
            "KAFKA_BOOTSTRAP",
            "a.example:9092, b.example:9093",
            "kafka_bootstrap",
            "a.example:9092,b.example:9093",
        ),
        ("KAFKA_BOOTSTRAP", "[::1]:9092", "kafka_bootstrap", "[::1]:9092"),
        (
            "DATABASE_URL",
            "postgres://u:p@db.example:6543/counts",
            "database_url",
            "postgres://u:p@db.example:6543/counts",
        ),
        ("TOPIC", "my_topic-1.v2", "topic", "my_topic-1.v2"),
        ("GROUP_ID", "other-group", "group_id", "other-group"),
        ("HTTP_HOST", "0.0.0.0", "http_host", "0.0.0.0"),
        ("LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("LOG_LEVEL", "warning", "log_level", "warning"),
        ("LOG_FORMAT", "JSON", "log_format", "json"),
        ("LOG_FORMAT", "text", "log_format", "text"),
    ],
)
def test_valid_override(name: str, raw: str, attribute: str, expected: object) -> None:
    assert operator.attrgetter(attribute)(_load(**{name: raw})) == expected


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        # not an integer
        ("HTTP_PORT", "abc"),
        ("HTTP_PORT", "80.5"),
        ("PARTITIONS", "six"),
        ("FLUSH_INTERVAL_MS", "5s"),
        ("MAX_LIVE_ENTRIES", "1e6"),
        # out of range
        ("HTTP_PORT", "0"),
        ("HTTP_PORT", "65536"),
        ("HTTP_PORT", "-1"),
        ("STATSD_PORT", "70000"),
        ("METRICS", "prometheus"),
        ("METRICS_SAMPLE_RATE", "0"),
        ("METRICS_SAMPLE_RATE", "1.5"),
        ("METRICS_SAMPLE_RATE", "often"),
        ("METRICS_TAGS", "env:prod,bad|tag"),
        ("METRICS_INTERVAL_MS", "5"),
        ("DEV_KAFKA_PORT", "99999"),
        ("PARTITIONS", "0"),
        ("PARTITIONS", "10001"),
        ("FLUSH_INTERVAL_MS", "9"),
        ("BUCKET_MS", "0"),
        ("MAX_BODY_BYTES", "63"),
        # bad bootstrap
        ("KAFKA_BOOTSTRAP", "host"),
        ("KAFKA_BOOTSTRAP", ":9092"),
        ("KAFKA_BOOTSTRAP", "host:"),
        ("KAFKA_BOOTSTRAP", "host:port"),
        ("KAFKA_BOOTSTRAP", "host:70000"),
        ("KAFKA_BOOTSTRAP", "good:9092,bad"),
        ("KAFKA_BOOTSTRAP", "bad host:9092"),
        # bad database URL
        ("DATABASE_URL", "mysql://user@db.example:3306/counts"),
        ("DATABASE_URL", "db.example/counts"),
        ("DATABASE_URL", "postgresql://user@db.example:5432"),
        ("DATABASE_URL", "postgresql://user@db.example:5432/"),
        ("DATABASE_URL", "postgresql:///counts"),
        ("DATABASE_URL", "postgresql://user@db.example:notaport/counts"),
        # bad topic name
        ("TOPIC", "has space"),
        ("TOPIC", "slash/topic"),
        ("TOPIC", "."),
        ("TOPIC", ".."),
        ("TOPIC", "t" * 250),
        ("DLQ_TOPIC", "bad!dlq"),
        # bad host
        ("HTTP_HOST", "not a host"),
        # bad log level
        ("LOG_LEVEL", "verbose"),
        ("LOG_LEVEL", "trace"),
        ("LOG_FORMAT", "xml"),
        ("LOG_FORMAT", "logfmt"),
        # bad version
        ("DEV_KAFKA_VERSION", "4.1"),
        ("DEV_KAFKA_VERSION", "latest"),
        ("DEV_KAFKA_VERSION", "v4.1.1"),
        # bad float / URL
        ("DEV_STOP_TIMEOUT_S", "0"),
        ("DEV_STOP_TIMEOUT_S", "-3"),
        ("DEV_STOP_TIMEOUT_S", "soon"),
        ("DEV_MAVEN_REPO", "ftp://mirror.example/maven2"),
        # too long
        ("GROUP_ID", "g" * 256),
    ],
)
def test_bad_value_names_variable_and_value(name: str, raw: str) -> None:
    variable = f"DISTCOUNT_{name}"
    with pytest.raises(ConfigError) as info:
        (load_dev if name.startswith("DEV_") else load)({variable: raw})
    message = str(info.value)
    assert variable in message
    assert raw in message


def test_bad_value_message_says_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match=r"expected a TCP port 1\.\.65535 \(out of range\)"):
        _load(HTTP_PORT="0")
    with pytest.raises(ConfigError, match=r"expected milliseconds 10\.\.3600000 \(not a whole"):
        _load(FLUSH_INTERVAL_MS="5s")
    with pytest.raises(ConfigError, match="debug or info or warning or error"):
        _load(LOG_LEVEL="loud")
    with pytest.raises(ConfigError, match="has no port"):
        _load(KAFKA_BOOTSTRAP="host")
    with pytest.raises(ConfigError, match="no database name"):
        _load(DATABASE_URL="postgresql://db.example:5432")
    with pytest.raises(ConfigError, match="scheme must be postgresql"):
        _load(DATABASE_URL="mysql://db.example/counts")


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="DISTCOUNT_PARTITIONS"):
        _load(PARTITIONS="many")


# --- unknown variables ------------------------------------------------------------------------


def test_unknown_variable_is_an_error() -> None:
    name = "DISTCOUNT_" + "Z" * 30  # close to nothing, so no suggestion
    with pytest.raises(ConfigError) as info:
        load({name: "1"})
    message = str(info.value)
    assert f"{name} is not a distcount setting" in message
    assert "did you mean" not in message


def test_unknown_variable_is_checked_after_known_ones_parse() -> None:
    # a valid known variable next to the unknown one must not hide the error
    with pytest.raises(ConfigError, match="DISTCOUNT_NO_SUCH_THING"):
        _load(HTTP_PORT="8080", NO_SUCH_THING="1")


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("DISTCOUNT_HTTP_POTR", "DISTCOUNT_HTTP_PORT"),
        ("DISTCOUNT_PARTITION", "DISTCOUNT_PARTITIONS"),
        ("DISTCOUNT_KAFKA_BOOTSTRAPS", "DISTCOUNT_KAFKA_BOOTSTRAP"),
        ("DISTCOUNT_DATABASE_ULR", "DISTCOUNT_DATABASE_URL"),
        ("DISTCOUNT_MIGRATE_DATABASE", "DISTCOUNT_MIGRATE_DATABASE_URL"),
    ],
)
def test_unknown_variable_suggests_near_miss(typo: str, meant: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({typo: "1"})
    message = str(info.value)
    assert typo in message
    assert f"did you mean {meant}?" in message


def test_unknown_variable_is_an_error_even_when_empty() -> None:
    with pytest.raises(ConfigError, match="DISTCOUNT_HTTP_POTR"):
        load({"DISTCOUNT_HTTP_POTR": ""})


# --- secrets ----------------------------------------------------------------------------------


def test_database_url_not_in_repr() -> None:
    url = "postgresql://user:s3cr3t-pw@db.example:5432/counts"
    settings = _load(DATABASE_URL=url)
    assert settings.database_url == url
    text = repr(settings)
    assert "s3cr3t-pw" not in text
    assert "database_url" not in text
    assert "db.example" not in text
    # the rest is still shown
    assert "kafka_bootstrap=" in text


def test_default_database_url_not_in_repr() -> None:
    settings = load({})
    assert settings.database_url not in repr(settings)


# --- edge cases ---------------------------------------------------------------------------------


def test_derived_dlq_topic_over_kafkas_limit_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        _load(TOPIC="t" * 246)
    assert str(info.value).startswith("DISTCOUNT_DLQ_TOPIC is not set, and its default, 'ttt")
    assert str(info.value).endswith("; set DISTCOUNT_DLQ_TOPIC, or change DISTCOUNT_TOPIC")
    assert _load(TOPIC="t" * 246, DLQ_TOPIC="dead").dlq_topic == "dead"


def test_bad_database_url_error_hides_the_password() -> None:
    with pytest.raises(ConfigError, match="DISTCOUNT_DATABASE_URL") as caught:
        _load(DATABASE_URL="postgresql://u:hunter2@h:99999/db")
    assert "hunter2" not in str(caught.value)
    assert "u:***@h:99999" in str(caught.value)


def test_unrelated_unknown_name_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        _load(NO_SUCH_THING="1")
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "raw"),
    [("KAFKA_BOOTSTRAP", "h\n:9092"), ("DEV_STOP_TIMEOUT_S", "inf"), ("TOPIC", "a\nb")],
)
def test_values_with_hidden_flaws_are_refused(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"DISTCOUNT_{name}"):
        (_load_dev if name.startswith("DEV_") else _load)(**{name: raw})


def test_the_ingress_compresses_with_any_kafka_codec_or_none() -> None:
    assert load({}).produce_compression is None
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        assert load({"DISTCOUNT_PRODUCE_COMPRESSION": codec}).produce_compression == codec
    with pytest.raises(ConfigError, match="DISTCOUNT_PRODUCE_COMPRESSION"):
        load({"DISTCOUNT_PRODUCE_COMPRESSION": "brotli"})
