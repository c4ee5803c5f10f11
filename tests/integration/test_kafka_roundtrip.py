from __future__ import annotations

import json

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import Services

pytestmark = pytest.mark.integration


async def test_a_record_produced_to_a_fresh_topic_is_consumed(
    services: Services, topic_name: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name, 3, 1)])
    finally:
        await admin.close()

    payload = json.dumps({"key": "c1", "value": 1}).encode()
    producer = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic_name, payload, key=b"c1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=services.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"{topic_name}.group",
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=15_000)
        while not batches:
            batches = await consumer.getmany(timeout_ms=15_000)
    finally:
        await consumer.stop()

    records = [record for batch in batches.values() for record in batch]
    assert [(r.key, r.value, r.partition, r.offset) for r in records] == [
        (b"c1", payload, sent.partition, sent.offset)
    ]
