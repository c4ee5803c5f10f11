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
from distcount_metrics import aggregator_metrics
from distcount_store import StoreError, create_pool

log = logging.getLogger("distcount.aggregator")

_COMMAND_TIMEOUT_S = 60.0


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
    running: list[Aggregator] = []
    metrics = aggregator_metrics(settings.metrics)

    def on_signal() -> None:
        stopping.set()
        for aggregator in running:
            aggregator.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    # each attempt builds its client afresh: aiokafka clients cannot be started twice
    pools: list[asyncpg.Pool] = []
    producers: list[AIOKafkaProducer] = []
    consumers: list[AIOKafkaConsumer] = []

    async def connect() -> None:
        # a flush stuck on a half-open connection times out and is retried (or fenced)
        pools.append(
            await create_pool(
                settings.database_url, min_size=1, max_size=8, command_timeout_s=_COMMAND_TIMEOUT_S
            )
        )

    async def start_producer() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        producers.append(producer)

    async def start_consumer() -> None:
        consumer = build_consumer(settings)
        aggregator = Aggregator(
            settings, consumer, pools[0], DeadLetters(producers[0], settings.dlq_topic), metrics
        )
        consumer.subscribe([settings.topic], listener=aggregator.listener)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        consumers.append(consumer)
        running.append(aggregator)

    try:
        async with metrics.reporting():
            if not (
                await _until_up("PostgreSQL", connect, stopping)
                and await _until_up("Kafka", start_producer, stopping)
                and await _until_up("Kafka", start_consumer, stopping)
            ):
                return
            aggregator = running[0]
            metrics.watch_live_entries(lambda: aggregator.live_entries)
            metrics.watch_lag(aggregator.lag)
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
        for consumer in consumers:
            await consumer.stop()
        for producer in producers:
            await producer.stop()
        for pool in pools:
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
