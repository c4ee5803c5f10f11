"""The aggregator process: builds the consumer, the pool and the dead-letter producer once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from distcount_aggregator._aggregator import Aggregator
from distcount_aggregator._deadletter import DeadLetters
from distcount_config import Settings
from distcount_store import StoreError, create_pool

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
    """Run one aggregator until SIGTERM or SIGINT; waits for Kafka and PostgreSQL to answer."""
    stopping = asyncio.Event()
    aggregator: Aggregator | None = None

    def on_signal() -> None:
        stopping.set()
        if aggregator is not None:
            aggregator.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    pools: list[asyncpg.Pool] = []

    async def connect() -> None:
        pools.append(await create_pool(settings.database_url, min_size=1, max_size=8))

    if not await _until_up("PostgreSQL", connect, stopping):
        return
    pool = pools[0]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    consumer = build_consumer(settings)
    try:
        if not await _until_up("Kafka", producer.start, stopping):
            return
        aggregator = Aggregator(settings, consumer, pool, DeadLetters(producer, settings.dlq_topic))
        consumer.subscribe([settings.topic], listener=aggregator.listener)
        if not await _until_up("Kafka", consumer.start, stopping):
            return
        log.info(
            "consuming %s as group %s; flushing every %d ms into buckets of %d ms",
            settings.topic,
            settings.group_id,
            settings.flush_interval_ms,
            settings.bucket_ms,
        )
        if stopping.is_set():
            aggregator.stop()
        await aggregator.run()
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


async def _until_up(
    what: str, start: Callable[[], Awaitable[None]], stopping: asyncio.Event
) -> bool:
    """`start()` again and again, with backoff, until it succeeds (True) or a signal says stop."""
    delay_s = 0.5
    while not stopping.is_set():
        try:
            await start()
        except (KafkaError, StoreError, OSError) as exc:
            log.warning("%s does not answer yet (%s); trying again in %.1f s", what, exc, delay_s)
        else:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay_s)
        delay_s = min(delay_s * 2, 10.0)
    return False


def run(settings: Settings) -> None:
    uvloop.run(serve(settings))
