"""compose.yaml runs the same stack as the defaults describe: images, ports and credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from distcount_config import Settings, load, load_dev

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def defaults() -> Settings:
    return load({})


def _published(service: dict[str, Any], protocol: str = "tcp") -> dict[int, int]:
    """container port -> host port, for ports bound to loopback."""
    ports = {}
    for entry in service["ports"]:
        address, host, container = str(entry).split(":")
        assert address == "127.0.0.1", f"{entry} is published beyond loopback"
        port, _, proto = container.partition("/")
        if (proto or "tcp") == protocol:
            ports[int(port)] = int(host)
    return ports


def test_kafka_image_is_the_version_the_local_stack_runs(
    compose: dict[str, Any], defaults: Settings
) -> None:
    for name in ("kafka", "topics"):
        assert compose["services"][name]["image"] == f"apache/kafka:{load_dev({}).kafka_version}"


def test_kafka_listens_where_the_default_bootstrap_points(
    compose: dict[str, Any], defaults: Settings
) -> None:
    kafka = compose["services"]["kafka"]
    host, port = defaults.kafka_bootstrap.rsplit(":", 1)
    assert _published(kafka)[int(port)] == int(port)
    assert f"HOST://{host}:{port}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_topics_match_the_default_topic_and_partitions(
    compose: dict[str, Any], defaults: Settings
) -> None:
    env = compose["services"]["topics"]["environment"]
    assert env["TOPIC"] == defaults.topic
    assert env["DLQ_TOPIC"] == defaults.dlq_topic
    assert int(env["PARTITIONS"]) == defaults.partitions


def test_postgres_matches_the_default_database_urls(
    compose: dict[str, Any], defaults: Settings
) -> None:
    postgres = compose["services"]["postgres"]
    url = urlsplit(defaults.database_url)
    migrate_url = urlsplit(defaults.migrate_database_url)
    assert url.port is not None
    assert _published(postgres)[5432] == url.port == migrate_url.port
    env = postgres["environment"]
    # the image's superuser is the migrating role; the roles service makes the services' one
    assert env["POSTGRES_USER"] == migrate_url.username
    assert env["POSTGRES_PASSWORD"] == migrate_url.password
    assert env["POSTGRES_DB"] == url.path.lstrip("/") == migrate_url.path.lstrip("/")
    assert str(postgres["image"]).startswith("postgres:")
    roles = compose["services"]["roles"]["environment"]
    assert (roles["SERVICE_USER"], roles["SERVICE_PASSWORD"]) == (url.username, url.password)
    assert roles["PGUSER"] == env["POSTGRES_USER"]
    assert roles["PGPASSWORD"] == env["POSTGRES_PASSWORD"]
    assert url.username != migrate_url.username


def test_statsd_listens_on_the_default_port(compose: dict[str, Any], defaults: Settings) -> None:
    statsd = compose["services"]["statsd"]
    assert _published(statsd, "udp")[8125] == defaults.metrics.statsd_port
    assert defaults.metrics.statsd_host == "127.0.0.1"


def test_the_services_reach_the_stack_inside_compose(
    compose: dict[str, Any], defaults: Settings
) -> None:
    services = compose["services"]
    kafka_env = services["kafka"]["environment"]
    postgres_env = services["postgres"]["environment"]
    roles_env = services["roles"]["environment"]
    for name in ("migrate", "ingress", "aggregator"):
        env = services[name]["environment"]
        # every DISTCOUNT_ variable set there is one distcount accepts
        settings = load({k: str(v) for k, v in env.items() if k.startswith("DISTCOUNT_")})
        assert f"INTERNAL://{settings.kafka_bootstrap}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        url = urlsplit(settings.database_url)
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert (url.username, url.password, url.path.lstrip("/")) == (
            roles_env["SERVICE_USER"],
            roles_env["SERVICE_PASSWORD"],
            postgres_env["POSTGRES_DB"],
        )
        assert settings.metrics.statsd_host in services
        assert settings.metrics.statsd_port == defaults.metrics.statsd_port
        assert f"distcount {name}" in " ".join(services[name]["command"])
        if name != "migrate":
            # the services never hold the superuser's password
            assert "DISTCOUNT_MIGRATE_DATABASE_URL" not in env
    migrate = load(
        {
            k: str(v)
            for k, v in services["migrate"]["environment"].items()
            if k.startswith("DISTCOUNT_")
        }
    )
    migrate_url = urlsplit(migrate.migrate_database_url)
    assert (migrate_url.hostname, migrate_url.port) == ("postgres", 5432)
    assert (migrate_url.username, migrate_url.password, migrate_url.path.lstrip("/")) == (
        postgres_env["POSTGRES_USER"],
        postgres_env["POSTGRES_PASSWORD"],
        postgres_env["POSTGRES_DB"],
    )
    # the role exists before `migrate` grants it anything
    assert "roles" in services["migrate"]["depends_on"]
    ingress = load(
        {
            k: str(v)
            for k, v in services["ingress"]["environment"].items()
            if k.startswith("DISTCOUNT_")
        }
    )
    assert _published(services["ingress"])[ingress.http_port] == defaults.http_port
