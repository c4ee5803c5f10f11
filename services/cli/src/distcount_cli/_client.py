"""`distcount incr`: an increment produced straight to Kafka, as any direct producer may (the
reads, `get` among them, go through the ingress: `_reads`)."""

from __future__ import annotations

import sys

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from distcount_codec import InvalidIncrement, encode_record, validate_increment
from distcount_config import Settings


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
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=settings.produce_timeout_ms,
    )
    message_key, message_value = encode_record(increment)
    try:
        await producer.start()
        metadata = await producer.send_and_wait(settings.topic, message_value, key=message_key)
    except KafkaError as exc:
        print(f"distcount: error: Kafka at {settings.kafka_bootstrap}: {exc}", file=sys.stderr)
        return 1
    finally:
        await producer.stop()
    print(
        f"{increment.key} {increment.value:+d} accepted "
        f"({settings.topic} partition {metadata.partition} offset {metadata.offset})"
    )
    return 0
