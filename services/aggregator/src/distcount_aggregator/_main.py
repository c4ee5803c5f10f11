"""The aggregator process: builds the consumer, the pool and the dead-letter producer once."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from distcount_aggregator._aggregator import Aggregator
from distcount_aggregator._deadletter import DeadLetters
from distcount_config import Settings
from distcount_store import create_pool

log = logging.getLogger("distcount.aggregator")


def consumer_options(settings: Settings) -> dict[str, Any]:
    """The aggregator's AIOKafkaConsumer settings (the benchmark's bare loop uses them too)."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": settings.group_id,
        "client_id": f"distcount-aggregator-{socket.gethostname()}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # records of aborted batch transactions (POST /increments) are never counted
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "fetch_max_wait_ms": 200,
    }


def build_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(**consumer_options(settings))


async def serve(settings: Settings) -> None:
    pool = await create_pool(settings.database_url, min_size=1, max_size=8)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    consumer = build_consumer(settings)
    try:
        await producer.start()
        aggregator = Aggregator(settings, consumer, pool, DeadLetters(producer, settings.dlq_topic))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, aggregator.stop)
        consumer.subscribe([settings.topic], listener=aggregator.listener)
        await consumer.start()
        log.info(
            "consuming %s as group %s; flushing every %d ms into buckets of %d ms",
            settings.topic,
            settings.group_id,
            settings.flush_interval_ms,
            settings.bucket_ms,
        )
        await aggregator.run()
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


def run(settings: Settings) -> None:
    uvloop.run(serve(settings))
