"""Increments to Kafka, answered only once the broker has acknowledged them.

A single record goes through an idempotent producer (acks=all). A batch goes through a
transactional producer, in one transaction, so read_committed consumers (the aggregators) see all
of its records or none. Both wait at most `produce_timeout_ms`; past it, and when
`max_inflight_sends` requests already await acknowledgements, the answer is `Unavailable` (503).
Such an answer means "not acknowledged": in rare cases (the broker wrote the record, or committed
the transaction, but the answer came late or was lost) the increment is still counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerClosed

from distcount_config import Settings
from distcount_core import describe
from distcount_ingress._batcher import Batcher
from distcount_ingress._errors import KafkaUnavailable, Overloaded
from distcount_ingress._producers import (
    Producer,
    ProducerSlot,
    default_transactional_id,
    single_producer_factory,
    transactional_producer_factory,
)

log = logging.getLogger("distcount.ingress")

Record = tuple[bytes, bytes]  # (message key, message value)

# A commit or an abort that does not end by then (aiokafka waits on both without a bound) leaves
# the transaction to the producer that replaces this one: starting it (same transactional id)
# fences this one and has the broker finish what it left open.
_END_TIMEOUT_S = 5.0

_NOT_CONNECTED = "not connected to Kafka"
_NO_TRANSACTIONS = "Kafka transactions are not available"


class KafkaPublisher:
    """Sends records to `settings.topic`; every method raises `Unavailable` rather than wait."""

    def __init__(self, settings: Settings, transactional_id: str | None = None) -> None:
        self._topic = settings.topic
        self._timeout_s = settings.produce_timeout_ms / 1000
        self._timeout_ms = settings.produce_timeout_ms
        self._max_inflight = settings.max_inflight_sends
        self._inflight = 0
        self._single = ProducerSlot(
            "Kafka producer", single_producer_factory(settings), self._timeout_s
        )
        self._transactional = ProducerSlot(
            "transactional Kafka producer",
            transactional_producer_factory(
                settings, transactional_id or default_transactional_id()
            ),
            self._timeout_s,
        )
        self._batcher = Batcher(
            settings.topic,
            timeout_s=self._timeout_s,
            on_error=lambda producer, exc: self._replace_if_broken(self._single, producer, exc),
        )
        # one producer runs one transaction at a time
        self._transaction_lock = asyncio.Lock()
        self._transactions: set[asyncio.Task[dict[int, int]]] = set()
        # when the running transaction began (loop time): every wait in it is bounded, so one
        # that lasts longer than all of them together is wedged, and readiness says so
        self._transaction_began: float | None = None
        # (its deadline, its commit or its abort, and a second for a loop running late)
        self._transaction_bound_s = self._timeout_s + 2 * _END_TIMEOUT_S + 1.0

    @property
    def inflight_sends(self) -> int:
        """Requests whose records await the broker's acknowledgement (a batch counts once)."""
        return self._inflight

    def start(self) -> None:
        """Start both producers in the background; until one is started its path answers 503."""
        self._single.start()
        self._transactional.start()

    async def wait_started(self, timeout_s: float) -> bool:
        """Whether both producers are started within `timeout_s`."""
        single, transactional = await asyncio.gather(
            self._single.wait_started(timeout_s), self._transactional.wait_started(timeout_s)
        )
        return single and transactional

    async def publish(self, key: bytes, value: bytes) -> tuple[int, int]:
        """The record's (partition, offset) once the broker has acknowledged it; else raise
        `Unavailable`."""
        producer = self._connected(self._single, _NOT_CONNECTED)
        if self._inflight >= self._max_inflight:
            raise Overloaded(f"{self._inflight} requests already await Kafka's acknowledgement")
        self._inflight += 1
        try:
            if not self._batcher.knows_partitions:
                await self._learn_partitions(producer)
            # shielded: a cancelled request must not cancel the outcome its batch shares
            outcome, partition, index = self._batcher.add(producer, key, value)
            result = await asyncio.shield(outcome)
        finally:
            self._inflight -= 1
        if isinstance(result, str):
            raise KafkaUnavailable(result)
        return partition, result + index

    async def partition_count(self) -> int | None:
        """How many partitions the topic has, as the producers learnt it (None while Kafka
        cannot say): the as_of of a read needs every partition's."""
        if not self._batcher.knows_partitions:
            producer = self._single.producer
            if producer is None:
                return None
            try:
                await self._learn_partitions(producer)
            except KafkaUnavailable:
                return None
        return self._batcher.partition_count

    async def _learn_partitions(self, producer: Producer) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._batcher.learn_partitions(producer)
        except TimeoutError:
            raise KafkaUnavailable(
                f"no metadata for the topic {self._topic!r} within {self._timeout_ms} ms"
            ) from None
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"no metadata for the topic {self._topic!r}: {describe(exc)}"
            ) from None

    async def publish_batch(self, records: Sequence[Record]) -> dict[int, int]:
        """Once one transaction holding all `records` is committed, the highest offset it wrote
        in each partition; else raise `Unavailable`."""
        if not records:
            return {}
        self._connected(self._transactional, _NO_TRANSACTIONS)
        if self._inflight >= self._max_inflight:
            raise Overloaded(f"{self._inflight} requests already await Kafka's acknowledgement")
        self._inflight += 1
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    await self._transaction_lock.acquire()
            except TimeoutError:
                raise KafkaUnavailable(
                    f"earlier batches kept Kafka busy for {self._timeout_ms} ms"
                ) from None
            try:
                # the producer of now: the one there was before the wait may have been replaced
                producer = self._connected(self._transactional, _NO_TRANSACTIONS)
            except KafkaUnavailable:
                self._transaction_lock.release()
                raise
            # A transaction, once begun, runs to its commit or its abort in a task of its own,
            # whatever happens to this request, and only then lets the next batch in.
            task = asyncio.create_task(self._transact(producer, records, deadline))
            self._transactions.add(task)
            task.add_done_callback(self._transaction_ended)
            done, _ = await asyncio.wait([task], timeout=max(0.0, deadline - loop.time()))
            if not done:
                raise KafkaUnavailable(
                    f"Kafka did not confirm the batch's commit within {self._timeout_ms} ms"
                )
            if task.cancelled():
                raise KafkaUnavailable("the ingress is shutting down")
            error = task.exception()
            if isinstance(error, TimeoutError):
                raise KafkaUnavailable(
                    f"Kafka did not acknowledge the batch within {self._timeout_ms} ms"
                )
            if error is not None:
                raise KafkaUnavailable(f"Kafka did not take the batch: {describe(error)}")
            return task.result()
        finally:
            self._inflight -= 1

    async def _transact(
        self, producer: Producer, records: Sequence[Record], deadline: float
    ) -> dict[int, int]:
        self._transaction_began = asyncio.get_running_loop().time()
        try:
            written = await self._send(producer, records, deadline)
            await self._commit(producer)
            return written
        finally:
            self._transaction_began = None
            self._transaction_lock.release()

    async def _send(
        self, producer: Producer, records: Sequence[Record], deadline: float
    ) -> dict[int, int]:
        acknowledgements: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout_at(deadline):
                # it waits for the producer id, which a producer that lost it may never get
                await producer.begin_transaction()
                for key, value in records:
                    acknowledgements.append(await producer.send(self._topic, value, key=key))
                metadata = await asyncio.gather(*acknowledgements)
        except BaseException:
            _discard(acknowledgements)
            await self._abort(producer)
            raise
        written: dict[int, int] = {}
        for record in metadata:
            written[record.partition] = max(record.offset, written.get(record.partition, -1))
        return written

    async def _commit(self, producer: Producer) -> None:
        # past this point the transaction is the broker's to finish; a commit that ends after
        # the request's deadline was answered 503 and is counted all the same
        try:
            async with asyncio.timeout(_END_TIMEOUT_S):
                await producer.commit_transaction()
        except TimeoutError:
            # a commit under way cannot be aborted: the broker finishes it, or aborts it when
            # the replacement fences this producer
            reason = f"the commit did not end within {_END_TIMEOUT_S:g} s"
            self._transactional.replace(producer, reason)
            raise
        except BaseException:
            await self._abort(producer)
            raise

    def _transaction_ended(self, task: asyncio.Task[dict[int, int]]) -> None:
        self._transactions.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here too: a request that gave up no longer looks

    async def _abort(self, producer: Producer) -> None:
        try:
            async with asyncio.timeout(_END_TIMEOUT_S):
                await producer.abort_transaction()
        # aiokafka signals a transaction in a state that cannot abort with AssertionError
        except (KafkaError, AssertionError, TimeoutError) as exc:
            self._transactional.replace(producer, f"the transaction did not abort: {describe(exc)}")

    def _replace_if_broken(self, slot: ProducerSlot, producer: Producer, exc: KafkaError) -> None:
        # An idempotent producer retries retriable errors itself; one that reaches the caller
        # otherwise (out-of-order sequence, fenced) leaves its sequence state unusable.
        if exc.retriable or isinstance(exc, KafkaTimeoutError | ProducerClosed):
            return
        slot.replace(producer, describe(exc))

    async def check(self, timeout_s: float) -> None:
        """Raise `KafkaUnavailable` unless both paths can take increments: a broker answers for
        metadata and knows the topic, both producers are connected, and no transaction has run
        past its bound."""
        producer = self._connected(self._single, _NOT_CONNECTED)
        try:
            async with asyncio.timeout(timeout_s):
                cluster = await producer.client.fetch_all_metadata()
        except TimeoutError:
            raise KafkaUnavailable(f"no metadata from Kafka within {timeout_s} s") from None
        except KafkaError as exc:
            raise KafkaUnavailable(f"no metadata from Kafka: {describe(exc)}") from None
        if self._topic not in cluster.topics():
            raise KafkaUnavailable(f"the topic {self._topic!r} does not exist")
        self._connected(self._transactional, _NO_TRANSACTIONS)
        began = self._transaction_began
        if began is not None:
            age_s = asyncio.get_running_loop().time() - began
            if age_s > self._transaction_bound_s:
                raise KafkaUnavailable(
                    f"a Kafka transaction has run for {age_s:.0f} s, past its bound of "
                    f"{self._transaction_bound_s:.0f} s"
                )

    def _connected(self, slot: ProducerSlot, unavailable: str) -> Producer:
        """The slot's producer; a broken one is replaced by whoever finds it, the readiness
        probe too: a service taken out of rotation would get no request to replace it."""
        producer, broken = slot.producer, slot.broken()
        if producer is not None and broken is not None:
            slot.replace(producer, broken)
        if broken is not None:
            raise KafkaUnavailable(f"{unavailable} ({broken})")
        return producer

    async def close(self) -> None:
        """Let running transactions end (at most the deadline), then flush and stop; idempotent."""
        if self._transactions:
            _, running = await asyncio.wait(self._transactions, timeout=self._timeout_s)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        self._batcher.send_all()
        await self._batcher.wait_delivered(self._timeout_s)
        await self._single.close()
        await self._transactional.close()
        await self._batcher.cancel_deliveries()


def _discard(acknowledgements: list[asyncio.Future[Any]]) -> None:
    # the transaction is aborted: nobody awaits these, and their errors must not be reported
    # as never retrieved
    for acknowledgement in acknowledgements:
        if acknowledgement.done():
            if not acknowledgement.cancelled():
                acknowledgement.exception()
        else:
            acknowledgement.cancel()
