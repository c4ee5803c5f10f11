"""`distcount incr`: an increment produced straight to Kafka, as any direct producer may (the
reads, `get` among them, go through the ingress: `_reads`)."""

from __future__ import annotations

import sys

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from distcount_cli import _logs
from distcount_codec import InvalidIncrement, encode_record, validate_increment
from distcount_config import Settings, kafka_client_options


async def incr(settings: Settings, key: str, raw_value: str) -> int:
    try:
        value: object = int(raw_value)
    except ValueError:
        value = raw_value
    try:
        increment = validate_increment({"key": key, "value": value})
    except InvalidIncrement as exc:
        print(f"distcount: error: {exc}", file=sys.stderr)
        return 2
    producer = build_producer(settings)
    message_key, message_value = encode_record(increment)
    try:
        await producer.start()
        metadata = await producer.send_and_wait(settings.topic, message_value, key=message_key)
    except KafkaError as exc:
        problem = f"Kafka at {settings.kafka_bootstrap}: {exc}"
        if settings.kafka_security.sasl and isinstance(exc, KafkaConnectionError):
            # aiokafka logs a refused login and then reports only that it could not connect
            problem += (
                " (with SASL, a refused login ends so too: check DISTCOUNT_KAFKA_SASL_USERNAME, "
                "DISTCOUNT_KAFKA_SASL_PASSWORD and DISTCOUNT_KAFKA_SASL_MECHANISM)"
            )
        print(f"distcount: error: {_logs.hide(problem)}", file=sys.stderr)
        return 1
    finally:
        await producer.stop()
    print(
        f"{increment.key} {increment.value:+d} accepted "
        f"({settings.topic} partition {metadata.partition} offset {metadata.offset})"
    )
    return 0


def build_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=settings.produce_timeout_ms,
    )
