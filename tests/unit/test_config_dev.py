"""Unit tests for distcount_config.load_dev, the local stack's settings, and for how the services'
defaults follow them. Every test passes an explicit mapping as the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from distcount_config import ConfigError, DevSettings, Settings, load, load_dev


def _load(**variables: str) -> Settings:
    return load({f"DISTCOUNT_{name}": value for name, value in variables.items()})


def _load_dev(**variables: str) -> DevSettings:
    return load_dev({f"DISTCOUNT_{name}": value for name, value in variables.items()})


def test_dev_defaults() -> None:
    dev = load_dev({})
    assert dev.kafka_port == 9092
    assert dev.kafka_controller_port == 9093
    assert dev.postgres_port == 5432
    assert dev.kafka_version == "4.1.1"
    assert dev.stop_timeout_s == 30.0
    assert dev.java_home is None
    # no repository of distcount's own: Maven's settings decide, as they do for any project
    assert dev.maven_repo_url is None
    assert dev.external_kafka is False
    assert dev.external_postgres is False


def test_default_bootstrap_follows_dev_kafka_port() -> None:
    assert _load(DEV_KAFKA_PORT="19092").kafka_bootstrap == "127.0.0.1:19092"
    assert _load_dev(DEV_KAFKA_PORT="19092").external_kafka is False


def test_default_database_url_follows_dev_postgres_port() -> None:
    settings = _load(DEV_POSTGRES_PORT="15432")
    assert settings.database_url.endswith("@127.0.0.1:15432/distcount")
    assert settings.migrate_database_url.endswith("@127.0.0.1:15432/distcount")
    assert _load_dev(DEV_POSTGRES_PORT="15432").external_postgres is False


def test_the_services_read_only_the_stack_settings_their_defaults_follow() -> None:
    # a bad setting of the stack's that no default of theirs follows stops `dev`, not a service
    assert _load(DEV_KAFKA_VERSION="latest").topic == "distcount.increments"
    with pytest.raises(ConfigError, match="DISTCOUNT_DEV_KAFKA_VERSION"):
        _load_dev(DEV_KAFKA_VERSION="latest")
    # one a default follows stops the services too, unless the default is not used
    with pytest.raises(ConfigError, match="DISTCOUNT_DEV_POSTGRES_PORT='0'"):
        _load(DEV_POSTGRES_PORT="0")
    assert _load(DEV_POSTGRES_PORT="0", DATABASE_URL="postgresql://u@db.example/counts")


@pytest.mark.parametrize(
    ("name", "raw", "attribute", "expected"),
    [
        ("DEV_KAFKA_VERSION", "3.9.0", "kafka_version", "3.9.0"),
        ("DEV_KAFKA_PORT", "19092", "kafka_port", 19092),
        ("DEV_KAFKA_CONTROLLER_PORT", "19093", "kafka_controller_port", 19093),
        ("DEV_POSTGRES_PORT", "15432", "postgres_port", 15432),
        ("DEV_STOP_TIMEOUT_S", "2.5", "stop_timeout_s", 2.5),
        (
            "DEV_MAVEN_REPO",
            "https://mirror.example/maven2/",
            "maven_repo_url",
            "https://mirror.example/maven2",
        ),
    ],
)
def test_valid_dev_override(name: str, raw: str, attribute: str, expected: object) -> None:
    assert getattr(_load_dev(**{name: raw}), attribute) == expected


def test_dev_dir_is_resolved(tmp_path: Path) -> None:
    dev = _load_dev(DEV_DIR=str(tmp_path / "a" / ".." / "state"))
    assert dev.state_dir == (tmp_path / "state").resolve()
    assert dev.state_dir.is_absolute()


def test_cache_dir_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert load_dev({"XDG_CACHE_HOME": str(tmp_path)}).cache_dir == tmp_path / "distcount"


def test_java_home_is_read_without_prefix(tmp_path: Path) -> None:
    assert load_dev({"JAVA_HOME": str(tmp_path)}).java_home == tmp_path


def test_both_loaders_know_every_name_and_refuse_the_rest() -> None:
    # one environment holds both scopes: neither loader refuses the other's names
    both = {"DISTCOUNT_DEV_KAFKA_VERSION": "3.9.0", "DISTCOUNT_TOPIC": "clicks"}
    assert load(both).topic == "clicks"
    assert load_dev(both).kafka_version == "3.9.0"
    with pytest.raises(ConfigError, match=r"did you mean DISTCOUNT_DEV_KAFKA_PORT\?"):
        load_dev({"DISTCOUNT_DEV_KAFKA_POTR": "1"})


# --- external services ------------------------------------------------------------------------


def test_external_kafka_when_bootstrap_is_set() -> None:
    dev = _load_dev(KAFKA_BOOTSTRAP="kafka.example:9092")
    assert dev.external_kafka is True
    assert dev.external_postgres is False
    assert _load(KAFKA_BOOTSTRAP="kafka.example:9092").kafka_bootstrap == "kafka.example:9092"


def test_external_postgres_when_database_url_is_set() -> None:
    dev = _load_dev(DATABASE_URL="postgresql://u@db.example/counts")
    assert dev.external_postgres is True
    assert dev.external_kafka is False
    assert _load(DATABASE_URL="postgresql://u@db.example/counts").database_url == (
        "postgresql://u@db.example/counts"
    )


def test_both_external() -> None:
    dev = _load_dev(
        KAFKA_BOOTSTRAP="kafka.example:9092", DATABASE_URL="postgresql://u@db.example/counts"
    )
    assert dev.external_kafka is True
    assert dev.external_postgres is True


# --- dev ports --------------------------------------------------------------------------------


def test_three_equal_dev_ports_is_an_error() -> None:
    with pytest.raises(ConfigError, match="three different ports"):
        _load_dev(DEV_KAFKA_PORT="7000", DEV_KAFKA_CONTROLLER_PORT="7000", DEV_POSTGRES_PORT="7000")


@pytest.mark.parametrize(
    "variables",
    [
        {"DEV_KAFKA_CONTROLLER_PORT": "9092"},  # clashes with the default Kafka port
        {"DEV_POSTGRES_PORT": "9093"},  # clashes with the default controller port
        {"DEV_KAFKA_PORT": "5432"},  # clashes with the default PostgreSQL port
    ],
)
def test_two_equal_dev_ports_is_an_error(variables: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        _load_dev(**variables)
    message = str(info.value)
    assert "DISTCOUNT_DEV_KAFKA_PORT" in message
    assert "DISTCOUNT_DEV_POSTGRES_PORT" in message


def test_blank_bootstrap_and_url_are_not_external() -> None:
    dev = load_dev({"DISTCOUNT_KAFKA_BOOTSTRAP": "", "DISTCOUNT_DATABASE_URL": " "})
    assert not dev.external_kafka
    assert not dev.external_postgres
