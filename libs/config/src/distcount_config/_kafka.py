"""What every Kafka client of distcount is built with: the brokers, and how to reach them
(TLS, SASL). Each place that makes a client starts from `kafka_client_options`, so that a
setting of DISTCOUNT_KAFKA_SECURITY_PROTOCOL reaches all of them or none (a unit test checks).

The TLS context is made here with the standard library, as aiokafka's own
`helpers.create_ssl_context` makes it (`ssl.create_default_context` for a server's
certificate, then the client's chain): settings stay free of the Kafka driver.
"""

from __future__ import annotations

import ssl
from typing import Any

from distcount_config._errors import ConfigError
from distcount_config._settings import KafkaSecurity, Settings


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient;
    callers add their own. Raises ConfigError for a certificate or key that cannot be loaded."""
    security = settings.kafka_security
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": security.protocol,
    }
    if security.sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        # aiokafka takes the "plain" pair for the SCRAM mechanisms too
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    if security.tls:
        options["ssl_context"] = tls_context(security)
    return options


def tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A client context that checks the broker's certificate and host name."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(security.ssl_cafile) if security.ssl_cafile else None,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"DISTCOUNT_KAFKA_SSL_CAFILE={str(security.ssl_cafile)!r} cannot be loaded: {exc}"
        ) from None
    if security.ssl_certfile is not None:
        try:
            context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"DISTCOUNT_KAFKA_SSL_CERTFILE={str(security.ssl_certfile)!r} (with "
                "DISTCOUNT_KAFKA_SSL_KEYFILE, if set) cannot be loaded as a certificate and its "
                f"key: {exc}"
            ) from None
    return context
