"""Single records grouped into per-partition batches that share one outcome: the hot path.

aiokafka's `send()` costs tens of microseconds a record in Python (metadata wait, partitioning,
a future and a metadata tuple per record) and each caller would need its own deadline timer.
Here a record is one append to its partition's open batch, and one timer holds the deadline of
all the records of a batch.

Batching is natural, without a linger: a partition with nothing on its way to the broker sends
its open batch at the end of the current loop iteration; otherwise the batch keeps filling until
the one on its way is acknowledged. Light load gets the latency of one round trip, heavy load
gets batches as large as a round trip's worth of requests.

A batch's outcome is its base offset once the broker acknowledged it (a record's own offset is
the base plus its index in the batch), or the reason it was not, as a string. At the
deadline a batch not yet handed to the producer is dropped, so its records are never written;
one already handed over cannot be withdrawn, and may still be written after its 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from distcount_core import describe
from distcount_ingress._producers import Producer

# key -> partition, so the pure-Python murmur2 runs once per key, not once per record
_MAX_CACHED_KEYS = 100_000
# murmur2 of the key, as the Java client does: a key lands where any other producer puts it
_partitioner = DefaultPartitioner()

Outcome = asyncio.Future[str | int]
OnError = Callable[[Producer, KafkaError], None]


class _Batch:
    __slots__ = ("builder", "delivery", "handed_over", "outcome", "partition", "producer", "timer")

    def __init__(self, producer: Producer, partition: int, outcome: Outcome) -> None:
        self.producer = producer
        self.partition = partition
        self.builder: Any = producer.create_batch()
        self.outcome = outcome
        self.timer: asyncio.TimerHandle | None = None
        self.delivery: asyncio.Task[None] | None = None
        self.handed_over = False  # to the producer: past this it cannot be withdrawn


class Batcher:
    """Open batches per partition of one topic; `add` returns the outcome the record shares."""

    def __init__(self, topic: str, timeout_s: float, on_error: OnError) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._on_error = on_error
        self._expired = f"Kafka did not acknowledge the record within {timeout_s * 1000:.0f} ms"
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}
        self._open: dict[int, _Batch] = {}
        self._sending: dict[int, int] = {}  # partition -> batches handed over, not yet answered
        self._deliveries: set[asyncio.Task[None]] = set()

    @property
    def knows_partitions(self) -> bool:
        return bool(self._partitions)

    @property
    def partition_count(self) -> int:
        return len(self._partitions)

    async def learn_partitions(self, producer: Producer) -> None:
        """Wait for the topic's metadata (once; later changes are picked up as batches go)."""
        self._set_partitions(await producer.partitions_for(self._topic))

    def partition(self, key: bytes) -> int:
        """The partition of `key` as Kafka's default partitioner puts it (`knows_partitions`)."""
        partition = self._partition_of.get(key)
        if partition is None:
            partition = _partitioner(key, self._partitions, self._partitions)
            if len(self._partition_of) >= _MAX_CACHED_KEYS:
                self._partition_of.clear()
            self._partition_of[key] = partition
        return partition

    def add(self, producer: Producer, key: bytes, value: bytes) -> tuple[Outcome, int, int]:
        """The outcome the record shares with its batch, its partition, and its index there."""
        partition = self._partition_of.get(key)
        if partition is None:  # the cache missed: a call more only then, on the hot path
            partition = self.partition(key)
        batch = self._open.get(partition)
        if batch is None or batch.producer is not producer:
            batch = self._open_batch(producer, partition)
        index = batch.builder.record_count()
        if batch.builder.append(timestamp=None, key=key, value=value) is None:
            self._send(batch)  # full
            batch = self._open_batch(producer, partition)
            index = 0
            if batch.builder.append(timestamp=None, key=key, value=value) is None:
                raise ValueError("a record larger than a whole batch")  # keys are <= 256 bytes
        return batch.outcome, partition, index

    def _open_batch(self, producer: Producer, partition: int) -> _Batch:
        loop = asyncio.get_running_loop()
        batch = _Batch(producer, partition, loop.create_future())
        batch.timer = loop.call_later(self._timeout_s, self._expire, batch)
        self._open[partition] = batch
        if not self._sending.get(partition):
            # with whatever else this loop iteration adds
            loop.call_soon(self._send_if_open, batch)
        return batch

    def _send_if_open(self, batch: _Batch) -> None:
        if self._open.get(batch.partition) is batch:
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        if self._open.get(batch.partition) is batch:
            del self._open[batch.partition]
        if batch.outcome.done():
            return  # expired before it could go: dropped, never written
        batch.builder.close()  # complete: the producer sends it without lingering
        self._sending[batch.partition] = self._sending.get(batch.partition, 0) + 1
        batch.delivery = task = asyncio.create_task(self._deliver(batch))
        self._deliveries.add(task)
        # a callback, not a `finally`: a task cancelled before its first step never runs its
        # body, and the partition must not wait for it forever
        task.add_done_callback(lambda done: self._finished(batch, done))

    async def _deliver(self, batch: _Batch) -> None:
        try:
            delivery = await batch.producer.send_batch(
                batch.builder, self._topic, partition=batch.partition
            )
            batch.handed_over = True
            metadata = await delivery
        except KafkaError as exc:
            self._on_error(batch.producer, exc)
            _settle(batch.outcome, f"Kafka did not take the record: {describe(exc)}")
        except AssertionError as exc:  # aiokafka asserts the partition is in its metadata
            _settle(batch.outcome, f"Kafka did not take the record: {describe(exc)}")
        except asyncio.CancelledError:
            _settle(batch.outcome, self._expired)
            raise
        else:
            _settle(batch.outcome, metadata.offset)

    def _finished(self, batch: _Batch, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        if batch.timer is not None:
            batch.timer.cancel()
        _settle(batch.outcome, self._expired)  # no-op unless cancelled before it began
        self._delivered(batch)

    def _delivered(self, batch: _Batch) -> None:
        partition = batch.partition
        self._sending[partition] -= 1
        known = batch.producer.client.cluster.partitions_for_topic(self._topic)
        if known is not None and len(known) != len(self._partitions):
            self._set_partitions(known)  # partitions were added to the topic
        waiting = self._open.get(partition)
        if not self._sending[partition] and waiting is not None:
            self._send(waiting)

    def _expire(self, batch: _Batch) -> None:
        _settle(batch.outcome, self._expired)
        if self._open.get(batch.partition) is batch:
            self._send(batch)  # drops it: the outcome is settled
        elif not batch.handed_over and batch.delivery is not None:
            # still waiting for room in the producer: never send what was answered 503
            batch.delivery.cancel()

    def _set_partitions(self, partitions: set[int]) -> None:
        self._partitions = sorted(partitions)
        self._partition_of.clear()

    def send_all(self) -> None:
        """Send every open batch now (at shutdown)."""
        for batch in list(self._open.values()):
            self._send(batch)

    async def wait_delivered(self, timeout_s: float) -> None:
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=timeout_s)

    async def cancel_deliveries(self) -> None:
        """Give up on deliveries still waiting (their producer is stopped)."""
        for task in self._deliveries:
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)


def _settle(outcome: Outcome, result: str | int) -> None:
    if not outcome.done():
        outcome.set_result(result)
