"""The Kafka producers' settings, and a slot that keeps one producer started through outages.

aiokafka's `start()` fails when no broker answers, and a producer whose sequence state broke
cannot be mended; the slot retries the start in the background and replaces a broken producer,
so the service starts and keeps running whatever the broker does, answering 503 meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from distcount_config import Settings

log = logging.getLogger("distcount.ingress")

# Between two attempts to start a producer while the broker is away.
_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 5.0
# Below a second the client's own metadata and connection requests would time out under load.
_MIN_REQUEST_TIMEOUT_MS = 1000
# A start that hangs (a broker that accepts connections and never answers) is retried.
_MIN_START_TIMEOUT_S = 10.0
# A process that dies inside a transaction holds back read_committed consumers of the
# partitions it wrote to until the broker aborts it, after this long.
_MIN_TRANSACTION_TIMEOUT_MS = 10_000

# aiokafka has no type information: producers are `Any` past this module's signatures.
Producer = Any


def producer_options(settings: Settings) -> dict[str, Any]:
    """What both producers share: durable (acks=all, idempotent)."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        # No lingering: single records come in batches already (see _batcher.py), and a
        # transaction's records are all appended before its commit sends them.
        "linger_ms": 0,
        "max_batch_size": 512 * 1024,
        # A record the producer could not hand over by about the request deadline fails in
        # the producer instead of lingering; records are a few dozen bytes: no compression.
        "request_timeout_ms": max(settings.produce_timeout_ms, _MIN_REQUEST_TIMEOUT_MS),
        "compression_type": None,
    }


def default_transactional_id() -> str:
    """Unique per process: two ingress processes must never fence each other's transactions."""
    return f"distcount-ingress-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def single_producer_factory(settings: Settings) -> Callable[[], Producer]:
    options = producer_options(settings)
    return lambda: AIOKafkaProducer(**options)


def transactional_producer_factory(
    settings: Settings, transactional_id: str
) -> Callable[[], Producer]:
    options = producer_options(settings)
    options["transactional_id"] = transactional_id
    options["transaction_timeout_ms"] = max(
        2 * settings.produce_timeout_ms, _MIN_TRANSACTION_TIMEOUT_MS
    )
    # the same id for every replacement: a new producer fences the broken one and has the
    # broker abort whatever transaction it left open
    return lambda: AIOKafkaProducer(**options)


class ProducerSlot:
    """One started producer, or None while it (re)connects in the background."""

    def __init__(self, name: str, factory: Callable[[], Producer], start_timeout_s: float) -> None:
        self.name = name
        self.producer: Producer | None = None
        self.last_error = "not connected yet"
        self._factory = factory
        self._start_timeout_s = max(start_timeout_s, _MIN_START_TIMEOUT_S)
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._connect(None), name=f"start {self.name}")

    async def wait_started(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._started.wait()
        except TimeoutError:
            return False
        return True

    def replace(self, broken: Producer, reason: str) -> None:
        """Retire `broken` if it is still the current producer, and start a fresh one."""
        if self._closed or broken is not self.producer:
            return  # closing, or another caller replaced it already
        log.warning("replacing the %s: %s", self.name, reason)
        self.producer = None
        self.last_error = f"reconnecting after: {reason}"
        self._started.clear()
        self._task = asyncio.create_task(self._connect(broken), name=f"restart {self.name}")

    async def _connect(self, retired: Producer | None) -> None:
        if retired is not None:
            await _stop_quietly(retired, self.name)
        delay_s = _RETRY_MIN_S
        while True:
            producer = self._factory()
            try:
                async with asyncio.timeout(self._start_timeout_s):
                    await producer.start()
            except asyncio.CancelledError:
                await _stop_quietly(producer, self.name)
                raise
            except Exception as exc:  # whatever the cause, the answer is a retry
                error = f"{exc.__class__.__name__}: {exc}"
                if error != self.last_error:  # one line per new cause, not one per attempt
                    log.warning("cannot start the %s, retrying: %s", self.name, error)
                self.last_error = error
                await _stop_quietly(producer, self.name)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)
                continue
            self.producer = producer
            self.last_error = ""
            self._started.set()
            log.info("the %s is connected", self.name)
            return

    async def close(self) -> None:
        """Stop reconnecting, then flush and stop the producer; safe to call twice."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        producer, self.producer = self.producer, None
        if producer is not None:
            await _stop_quietly(producer, self.name)


async def _stop_quietly(producer: Producer, name: str) -> None:
    try:
        await producer.stop()
    except Exception as exc:  # a producer that fails to stop is dropped anyway
        log.warning("stopping the %s failed: %s: %s", name, exc.__class__.__name__, exc)
