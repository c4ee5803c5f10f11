"""Every Kafka client distcount makes is built through `kafka_client_options`, so that TLS and
SASL settings reach all of them: checked on the clients themselves, and on the sources, so that
a client added later without it fails here."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from distcount_aggregator._main import build_consumer, build_dead_letter_producer, build_end_probe
from distcount_cli._client import build_producer
from distcount_config import ConfigError, Settings, kafka_client_options, load, load_dev
from distcount_devstack import Stack
from distcount_ingress._producers import single_producer_factory, transactional_producer_factory

ROOT = Path(__file__).resolve().parents[2]
SASL = {
    "DISTCOUNT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "DISTCOUNT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "DISTCOUNT_KAFKA_SASL_USERNAME": "svc",
    "DISTCOUNT_KAFKA_SASL_PASSWORD": "pa55word",
}
_CLIENT_RE = re.compile(r"\bAIOKafka(?:Producer|Consumer|AdminClient)\(")
# The local stack's Kafka clients reach its own brokers in plain text, and a user's Kafka with
# the options `Stack` builds by kafka_client_options and hands them (`security=`)
_GIVEN_BY_CALLER = {"libs/devstack/src/distcount_devstack/_kafka.py"}


@pytest.fixture
def settings() -> Settings:
    return load(SASL)


def _clients(settings: Settings) -> dict[str, Any]:
    return {
        "ingress single": single_producer_factory(settings)(),
        "ingress batches": transactional_producer_factory(settings, "t-1")(),
        "aggregator consumer": build_consumer(settings),
        "aggregator end probe": build_end_probe(settings),
        "aggregator dead letters": build_dead_letter_producer(settings),
        "distcount incr": build_producer(settings),
    }


def _inner(client: Any) -> Any:
    # producers name their connection client `client`, consumers `_client`
    return client.client if hasattr(client, "client") else client._client


async def _closed(clients: dict[str, Any]) -> None:
    for client in clients.values():
        await client.stop()


async def test_every_client_is_made_with_the_security_settings(settings: Settings) -> None:
    clients = _clients(settings)
    await _closed(clients)
    for name, client in clients.items():
        inner = _inner(client)  # aiokafka keeps the connection settings on its client
        assert inner._security_protocol == "SASL_SSL", name
        assert inner._sasl_mechanism == "SCRAM-SHA-256", name
        assert inner._sasl_plain_username == "svc", name
        assert inner._sasl_plain_password == "pa55word", name
        assert isinstance(inner._ssl_context, ssl.SSLContext), name
        assert inner._ssl_context.check_hostname, name


async def test_plaintext_by_default() -> None:
    clients = _clients(load({}))
    await _closed(clients)
    for name, client in clients.items():
        assert _inner(client)._security_protocol == "PLAINTEXT", name
        assert _inner(client)._ssl_context is None, name


def test_every_kafka_client_in_the_sources_uses_the_shared_options() -> None:
    makers = [
        path.relative_to(ROOT).as_posix()
        for top in ("libs", "services")
        for path in sorted((ROOT / top).rglob("*.py"))
        if _CLIENT_RE.search(path.read_text())
    ]
    assert makers, "no Kafka client found: has the pattern gone stale?"
    missing = [
        name
        for name in makers
        if "kafka_client_options(" not in (ROOT / name).read_text() and name not in _GIVEN_BY_CALLER
    ]
    assert not missing, f"Kafka clients made without kafka_client_options: {missing}"


def test_sasl_needs_a_user_and_a_password() -> None:
    with pytest.raises(ConfigError, match="DISTCOUNT_KAFKA_SASL_USERNAME"):
        load({"DISTCOUNT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    with pytest.raises(ConfigError, match="would not be sent"):
        load({"DISTCOUNT_KAFKA_SASL_USERNAME": "u", "DISTCOUNT_KAFKA_SASL_PASSWORD": "p"})


def test_a_missing_or_broken_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DISTCOUNT_KAFKA_SSL_CAFILE"):
        load({"DISTCOUNT_KAFKA_SECURITY_PROTOCOL": "SSL", "DISTCOUNT_KAFKA_SSL_CAFILE": "/nope"})
    broken = tmp_path / "ca.pem"
    broken.write_text("not a certificate")
    settings = load(
        {"DISTCOUNT_KAFKA_SECURITY_PROTOCOL": "SSL", "DISTCOUNT_KAFKA_SSL_CAFILE": str(broken)}
    )
    with pytest.raises(ConfigError, match="DISTCOUNT_KAFKA_SSL_CAFILE"):
        kafka_client_options(settings)


def test_the_password_is_never_shown(settings: Settings) -> None:
    assert "pa55word" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        load({**SASL, "DISTCOUNT_KAFKA_SASL_PASSWORD": "x" * 2000})
    assert "x" * 20 not in str(caught.value)


def test_dev_up_reaches_a_users_kafka_as_the_services_do() -> None:
    environ = {**SASL, "DISTCOUNT_KAFKA_BOOTSTRAP": "kafka.example:9093"}
    stack = Stack(load(environ), load_dev(environ), say=lambda _: None)
    options = stack._user_kafka()  # what dev up's admin clients are given
    assert options["sasl_plain_password"] == "pa55word"
    assert options["security_protocol"] == "SASL_SSL"
