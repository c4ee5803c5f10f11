"""The aggregator process: builds the database pool, the dead-letter producer and the consumer
once, each as soon as its server answers, and closes them in the reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from distcount_aggregator._aggregator import Aggregator
from distcount_aggregator._deadletter import DeadLetters
from distcount_config import Settings, kafka_client_options
from distcount_core import Backoff
from distcount_metrics import AggregatorMetrics, aggregator_metrics
from distcount_store import Database, StoreError

log = logging.getLogger("distcount.aggregator")

T = TypeVar("T")

_COMMAND_TIMEOUT_S = 60.0


def consumer_options(settings: Settings) -> dict[str, Any]:
    """The aggregator's AIOKafkaConsumer settings (the benchmark's bare loop uses them too)."""
    return {
        **kafka_client_options(settings),
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


def build_end_probe(settings: Settings) -> AIOKafkaConsumer:
    """A consumer in no group that only asks where partitions end, reading uncommitted: its
    answer is the high watermark, past every record a producer has had acknowledged. The group's
    own consumer reads committed and would answer the last stable offset, which stays before a
    committed transaction until the broker has written its markers, some time after the producer
    was told the commit succeeded (and the ingress answered 202)."""
    return AIOKafkaConsumer(
        **kafka_client_options(settings),
        client_id=f"{consumer_options(settings)['client_id']}-ends",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
    )


async def serve(settings: Settings) -> None:
    """Run one aggregator until SIGTERM or SIGINT; waits for Kafka and PostgreSQL to answer."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    metrics = aggregator_metrics(settings.metrics)
    async with contextlib.AsyncExitStack() as resources:
        await resources.enter_async_context(metrics.reporting())
        database = await _when_up("PostgreSQL", lambda: _open_database(settings), stopping)
        if database is None:
            return
        resources.push_async_callback(database.close)
        producer = await _when_up("Kafka", lambda: _started_producer(settings), stopping)
        if producer is None:
            return
        resources.push_async_callback(producer.stop)
        aggregator = await _when_up(
            "Kafka", lambda: _subscribed(settings, database, producer, metrics), stopping
        )
        if aggregator is None:
            return
        resources.push_async_callback(aggregator.stop)
        await _run(settings, aggregator.aggregator, metrics, stopping)


async def _run(
    settings: Settings, aggregator: Aggregator, metrics: AggregatorMetrics, stopping: asyncio.Event
) -> None:
    metrics.watch_live_entries(lambda: aggregator.live_entries)
    metrics.watch_lag(aggregator.lag)
    log.info(
        "consuming %s as group %s; flushing every %d ms into buckets of %d ms",
        settings.topic,
        settings.group_id,
        settings.flush_interval_ms,
        settings.bucket_ms,
    )
    # a signal from now on stops the loop, which flushes on its way out
    stopper = asyncio.ensure_future(stopping.wait())
    stopper.add_done_callback(lambda _: aggregator.stop())
    try:
        await aggregator.run()
    finally:
        stopper.cancel()


async def _open_database(settings: Settings) -> Database:
    # a flush stuck on a half-open connection times out and is retried (or fenced)
    return await Database.open(
        settings.database_url, min_size=1, max_size=8, command_timeout_s=_COMMAND_TIMEOUT_S
    )


def build_dead_letter_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**kafka_client_options(settings), acks="all", enable_idempotence=True)


async def _started_producer(settings: Settings) -> AIOKafkaProducer:
    producer = build_dead_letter_producer(settings)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # aiokafka clients cannot be started twice: each try builds anew
        raise
    return producer


class _Subscribed:
    def __init__(
        self, consumer: AIOKafkaConsumer, ends: AIOKafkaConsumer, aggregator: Aggregator
    ) -> None:
        self.consumer = consumer
        self.ends = ends
        self.aggregator = aggregator

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.ends.stop()


async def _subscribed(
    settings: Settings,
    database: Database,
    producer: AIOKafkaProducer,
    metrics: AggregatorMetrics,
) -> _Subscribed:
    ends = build_end_probe(settings)
    try:
        await ends.start()
    except BaseException:
        await ends.stop()
        raise
    consumer = build_consumer(settings)
    dead_letters = DeadLetters(producer, settings.dlq_topic)
    aggregator = Aggregator(
        settings, consumer, database, dead_letters, metrics, end_offsets=ends.end_offsets
    )
    consumer.subscribe([settings.topic], listener=aggregator.listener)
    try:
        await consumer.start()
    except BaseException:
        await consumer.stop()
        await ends.stop()
        raise
    return _Subscribed(consumer, ends, aggregator)


async def _when_up(
    what: str, start: Callable[[], Awaitable[T]], stopping: asyncio.Event
) -> T | None:
    """`start()` again and again, with backoff, until it succeeds or a signal says stop (None)."""
    backoff = Backoff(0.5, 10.0)
    while not stopping.is_set():
        try:
            return await start()
        except (KafkaError, OSError) as exc:
            log.warning("%s does not answer yet (%s); trying again", what, exc)
        except StoreError as exc:
            if not exc.retriable:
                raise
            log.warning("%s does not answer yet (%s); trying again", what, exc)
        if await backoff.sleep(stopping):
            break
    return None


def run(settings: Settings) -> None:
    uvloop.run(serve(settings))
