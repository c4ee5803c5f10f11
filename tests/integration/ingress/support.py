"""The ingress in process around a real broker and database, and readers of what reached Kafka."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from distcount_config import Settings, load
from distcount_ingress import KafkaPublisher, PostgresTotals, create_app
from distcount_store import Database
from tests.conftest import Services

PARTITIONS = 3
MAX_BODY_BYTES = 2048


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(services: Services, topic: str, database_url: str, **extra: str) -> Settings:
    environ = {
        "DISTCOUNT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "DISTCOUNT_DATABASE_URL": database_url,
        "DISTCOUNT_TOPIC": topic,
        "DISTCOUNT_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "DISTCOUNT_PRODUCE_TIMEOUT_MS": "15000",
    }
    environ.update({f"DISTCOUNT_{name.upper()}": value for name, value in extra.items()})
    return load(environ)


@dataclass
class Ingress:
    client: httpx.AsyncClient
    publisher: KafkaPublisher
    started: bool


@asynccontextmanager
async def ingress(settings: Settings, wait_started_s: float = 30.0) -> AsyncIterator[Ingress]:
    """The app in process, with the producers and the pool `serve()` would build."""
    publisher = KafkaPublisher(settings)
    publisher.start()
    database = await Database.open(settings.database_url, min_size=0, connect_timeout_s=3)
    try:
        started = await publisher.wait_started(wait_started_s)
        app = create_app(
            settings, publisher, PostgresTotals(database, settings.group_id, settings.topic)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            yield Ingress(client, publisher, started)
    finally:
        await publisher.close()
        await database.close()


async def end_offsets(
    bootstrap: str, topic: str, isolation_level: str = "read_uncommitted"
) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return offsets
    finally:
        await consumer.stop()


async def consume_all(bootstrap: str, topic: str, isolation_level: str) -> list[Any]:
    """Every record of the topic, from the beginning up to the end offsets at the call."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation_level, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        async with asyncio.timeout(30):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=1000)
                records.extend(r for batch in batches.values() for r in batch)
        return records
    finally:
        await consumer.stop()
