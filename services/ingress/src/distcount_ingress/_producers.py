"""The Kafka producers' settings, and a slot that keeps one producer started through outages.

aiokafka's `start()` fails when no broker answers, and a producer whose sequence state broke
cannot be mended; the slot retries the start in the background and replaces a broken producer,
so the service starts and keeps running whatever the broker does, answering 503 meanwhile.

No wait on a producer is left unbounded: aiokafka's `stop()` flushes first, and a producer that
lost its broker mid-transaction can wait on that flush (or on its sender task) for as long as
the broker takes to come back, or forever. A producer that does not stop in time is abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed

from distcount_config import Settings, kafka_client_options
from distcount_core import Backoff, describe

log = logging.getLogger("distcount.ingress")

# Between two attempts to start a producer while the broker is away.
_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 5.0
# Below a second the client's own metadata and connection requests would time out under load.
_MIN_REQUEST_TIMEOUT_MS = 1000
# A start that hangs (a broker that accepts connections and never answers) is retried.
_MIN_START_TIMEOUT_S = 10.0
# A stop flushes records whose requests were answered (or given up) already: a producer that
# cannot flush them by then is abandoned, and what it left running is closed, within the other.
_STOP_TIMEOUT_S = 5.0
_CLOSE_TIMEOUT_S = 2.0
# A process that dies inside a transaction holds back read_committed consumers of the
# partitions it wrote to until the broker aborts it, after this long.
_MIN_TRANSACTION_TIMEOUT_MS = 10_000

# aiokafka has no type information: producers are `Any` past this module's signatures.
Producer = Any
T = TypeVar("T")


def producer_options(settings: Settings) -> dict[str, Any]:
    """What both producers share: durable (acks=all, idempotent)."""
    return {
        **kafka_client_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        # No lingering: single records come in batches already (see _batcher.py), and a
        # transaction's records are all appended before its commit sends them.
        "linger_ms": 0,
        "max_batch_size": 512 * 1024,
        # A record the producer could not hand over by about the request deadline fails in
        # the producer instead of lingering.
        "request_timeout_ms": max(settings.produce_timeout_ms, _MIN_REQUEST_TIMEOUT_MS),
        # None by default: it saves bytes, not CPU, and the broker and the aggregators then
        # decompress every batch too (see DISTCOUNT_PRODUCE_COMPRESSION in the README)
        "compression_type": settings.produce_compression,
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

    def broken(self) -> str | None:
        """Why the current producer cannot send (there is none, or a task it needs has ended)."""
        if self.producer is None:
            return self.last_error
        return _broken(self.producer)

    async def _connect(self, retired: Producer | None) -> None:
        if retired is not None:
            await _retire(retired, self.name)
        backoff = Backoff(_RETRY_MIN_S, _RETRY_MAX_S)
        while True:
            producer = self._factory()
            try:
                await _bounded(producer.start(), self._start_timeout_s)
            except asyncio.CancelledError:
                await _retire(producer, self.name)
                raise
            except Exception as exc:  # whatever the cause, the answer is a retry
                error = describe(exc)
                if error != self.last_error:  # one line per new cause, not one per attempt
                    log.warning("cannot start the %s, retrying: %s", self.name, error)
                self.last_error = error
                await _retire(producer, self.name)
                await backoff.sleep()
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
            await _retire(producer, self.name)


# aiokafka offers no way to drop a producer without flushing it, nor to ask whether it still
# works: the functions below reach into its sender, accumulator and client, which aiokafka
# 0.14 names `_sender`, `_message_accumulator` (its batches: `_batches`, `_pending_batches`) and
# `client` (whose metadata task is `_sync_task`).


def _broken(producer: Producer) -> str | None:
    # The sender task delivers batches and drives transactions; the client's metadata task
    # answers every wait for metadata (a produce request that failed waits for one before its
    # retry). Once either has ended, the producer can send nothing ever again. The metadata
    # task ends so under uvloop, whose closed sockets raise RuntimeError where aiokafka expects
    # OSError (aio-libs/aiokafka#1038): that was the batch path's endless 503 after an outage.
    for what, task in (
        ("sender", producer._sender.sender_task),
        ("metadata task", producer.client._sync_task),
    ):
        if task is not None and task.done():
            error = None if task.cancelled() else task.exception()
            cause = "stopped" if error is None else describe(error)
            return f"its {what} has ended ({cause})"
    return None


async def _retire(producer: Producer, name: str) -> None:
    """Stop `producer`, or abandon it: this returns within _STOP_TIMEOUT_S + _CLOSE_TIMEOUT_S."""
    try:
        await _bounded(producer.stop(), _STOP_TIMEOUT_S)
        return
    except TimeoutError:
        log.warning("the %s did not stop within %g s: abandoned", name, _STOP_TIMEOUT_S)
    except Exception as exc:  # a producer that fails to stop is dropped anyway
        log.warning("stopping the %s failed: %s", name, describe(exc))
    try:
        await _bounded(_close_leftovers(producer), _CLOSE_TIMEOUT_S)
    except Exception as exc:
        log.warning("closing the %s failed: %s", name, describe(exc))


async def _close_leftovers(producer: Producer) -> None:
    # Its records were answered 503 already (or belong to a transaction its replacement's
    # fencing aborts): failing them ends the waits on them, the flush that `stop()` began too.
    accumulator = producer._message_accumulator
    batches = [*itertools.chain(*accumulator._batches.values()), *accumulator._pending_batches]
    accumulator.fail_all(ProducerClosed())
    for batch in batches:
        # a batch's own futures, which nobody may await any more: not "never retrieved"
        for future in (batch.future, batch._drain_waiter):
            if future.done() and not future.cancelled():
                future.exception()
    # A cancelled sender waits for the requests it had under way, and a request waiting for
    # a coordinator retries without end: each cancellation ends the wait it lands on.
    task = producer._sender.sender_task
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    client = producer.client
    if client._sync_task is not None and client._sync_task.done():
        # `close()` would raise the error it ended with, before closing the connections
        client._sync_task = None
    await client.close()


async def _bounded(awaitable: Awaitable[T], timeout_s: float) -> T:
    """`awaitable`'s result, or TimeoutError after `timeout_s`, even if it ignores cancellation.

    It runs in a task of its own, cancelled at the bound but not waited for: aiokafka turns
    some cancellations into waits (a cancelled sender waits for its requests to end), so
    `asyncio.timeout` alone would wait as long as they do.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([task], timeout=timeout_s)
    finally:
        if not task.done():
            task.cancel()
            task.add_done_callback(_drop_outcome)
    if not done:
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    return task.result()


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    # nobody awaits an abandoned task: its error must not be reported as never retrieved
    if not task.cancelled():
        task.exception()
