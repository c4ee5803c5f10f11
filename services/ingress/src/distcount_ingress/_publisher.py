"""Increments to Kafka, answered only once the broker has acknowledged them.

A single record goes through an idempotent producer (acks=all). A batch goes through a
transactional producer, in one transaction, so read_committed consumers (the aggregators) see all
of its records or none. Both wait at most `produce_timeout_ms`; past it, and when
`max_inflight_sends` requests already await acknowledgements, the answer is `Unavailable` (503).
Such an answer means "not acknowledged": in rare cases (the broker wrote the record, or committed
the transaction, but the answer came late or was lost) the increment is still counted.

Group commit: one producer runs one transaction at a time, and a transaction costs a few round
trips to the broker whatever it holds. So batches do not queue for a transaction each: every
batch that arrives while one runs joins the next, which takes them all (up to
`_MAX_GROUP_RECORDS` records) and answers each once it commits. A batch is still all or nothing,
since all of its records are in one transaction; a transaction that fails fails every batch in
it, each answered 503. The records go to the producer as one batch per partition, built here,
as the single records are (see _batcher.py), not one `send()` each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

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

# Records one transaction takes at most (batches that arrived later wait for the next): enough
# to spread a transaction's round trips thin, few enough that a failure fails few requests.
_MAX_GROUP_RECORDS: Final = 50_000

_NOT_CONNECTED = "not connected to Kafka"
_NO_TRANSACTIONS = "Kafka transactions are not available"


@dataclass(eq=False)
class _Joined:
    """A batch request: waiting for a transaction to take it, then for that one's commit."""

    records: Sequence[Record]
    outcome: asyncio.Future[dict[int, int]]


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
        # batches no transaction has taken yet, in arrival order, and the task that runs
        # transactions while there are any (one at a time: one producer, one transaction)
        self._waiting: list[_Joined] = []
        self._committer: asyncio.Task[None] | None = None
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
        """Once the transaction holding all `records` is committed, the highest offset they
        have in each partition; else raise `Unavailable`."""
        if not records:
            return {}
        self._connected(self._transactional, _NO_TRANSACTIONS)
        if self._inflight >= self._max_inflight:
            raise Overloaded(f"{self._inflight} requests already await Kafka's acknowledgement")
        self._inflight += 1
        joined = _Joined(records, asyncio.get_running_loop().create_future())
        self._waiting.append(joined)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_groups(), name="transactions")
        try:
            async with asyncio.timeout(self._timeout_s):
                # shielded: a request that ends leaves its transaction to run to its end
                return await asyncio.shield(joined.outcome)
        except TimeoutError:
            if self._withdraw(joined):
                raise KafkaUnavailable(
                    f"earlier batches kept Kafka busy for {self._timeout_ms} ms"
                ) from None
            raise KafkaUnavailable(
                f"Kafka did not confirm the batch's commit within {self._timeout_ms} ms"
            ) from None
        except asyncio.CancelledError:
            self._withdraw(joined)  # never send what nobody waits for
            raise
        finally:
            self._inflight -= 1

    def _withdraw(self, joined: _Joined) -> bool:
        """Take a batch no transaction has taken out of the queue; whether it was there."""
        try:
            self._waiting.remove(joined)
        except ValueError:
            return False
        return True

    async def _commit_groups(self) -> None:
        """Transactions one after the other while batches wait, each taking all it may."""
        while self._waiting:
            group = self._take_group()
            try:
                producer = self._connected(self._transactional, _NO_TRANSACTIONS)
                written = await self._transact(producer, group)
            except asyncio.CancelledError:
                _fail(group, KafkaUnavailable("the ingress is shutting down"))
                raise
            except TimeoutError:
                _fail(
                    group,
                    KafkaUnavailable(
                        f"Kafka did not acknowledge the batch within {self._timeout_ms} ms"
                    ),
                )
            except KafkaUnavailable as exc:
                _fail(group, exc)
            except Exception as exc:  # each request is answered with it
                _fail(group, KafkaUnavailable(f"Kafka did not take the batch: {describe(exc)}"))
            else:
                for joined, offsets in zip(group, written, strict=True):
                    if not joined.outcome.done():
                        joined.outcome.set_result(offsets)

    def _take_group(self) -> list[_Joined]:
        """The waiting batches the next transaction takes: the oldest, and those after it
        while the records stay within `_MAX_GROUP_RECORDS`."""
        count, records = 0, 0
        for joined in self._waiting:
            if count and records + len(joined.records) > _MAX_GROUP_RECORDS:
                break
            count += 1
            records += len(joined.records)
        group, self._waiting = self._waiting[:count], self._waiting[count:]
        return group

    async def _transact(self, producer: Producer, group: Sequence[_Joined]) -> list[dict[int, int]]:
        loop = asyncio.get_running_loop()
        self._transaction_began = loop.time()
        try:
            written = await self._send(producer, group, loop.time() + self._timeout_s)
            await self._commit(producer)
            return written
        finally:
            self._transaction_began = None

    async def _send(
        self, producer: Producer, group: Sequence[_Joined], deadline: float
    ) -> list[dict[int, int]]:
        """Send every record of `group` in one transaction, one producer batch per partition
        (more when one fills up); per request, the highest offset of its records per partition."""
        # the producer batches in the order they were opened: a builder until it is handed to
        # the producer, then the future of its delivery (its base offset)
        slots: list[Any] = []
        # per request, per partition: (slot, index in that batch) of its last record there
        last: list[dict[int, tuple[int, int]]] = [{} for _ in group]
        try:
            async with asyncio.timeout_at(deadline):
                # it waits for the producer id, which a producer that lost it may never get
                await producer.begin_transaction()
                if not self._batcher.knows_partitions:
                    await self._batcher.learn_partitions(producer)
                partition_of = self._batcher.partition
                open_slot: dict[int, int] = {}  # partition -> slot of the batch it fills
                for mine, joined in zip(last, group, strict=True):
                    for key, value in joined.records:
                        partition = partition_of(key)
                        slot = open_slot.get(partition)
                        if slot is None:
                            slot = open_slot[partition] = len(slots)
                            slots.append(producer.create_batch())
                        index = slots[slot].record_count()
                        if slots[slot].append(timestamp=None, key=key, value=value) is None:
                            await self._hand_over(producer, slots, slot, partition)  # full
                            slot = open_slot[partition] = len(slots)
                            slots.append(producer.create_batch())
                            index = 0
                            if slots[slot].append(timestamp=None, key=key, value=value) is None:
                                raise ValueError("a record larger than a whole batch")
                        mine[partition] = (slot, index)
                for partition, slot in open_slot.items():
                    await self._hand_over(producer, slots, slot, partition)
                metadata = await asyncio.gather(*slots)
        except BaseException:
            _discard([slot for slot in slots if isinstance(slot, asyncio.Future)])
            await self._abort(producer)
            raise
        return [
            {partition: metadata[slot].offset + index for partition, (slot, index) in mine.items()}
            for mine in last
        ]

    async def _hand_over(
        self, producer: Producer, slots: list[Any], slot: int, partition: int
    ) -> None:
        builder = slots[slot]
        builder.close()
        slots[slot] = await producer.send_batch(builder, self._topic, partition=partition)

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
        committer = self._committer
        if committer is not None and not committer.done():
            _, running = await asyncio.wait([committer], timeout=self._timeout_s)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        self._batcher.send_all()
        await self._batcher.wait_delivered(self._timeout_s)
        await self._single.close()
        await self._transactional.close()
        await self._batcher.cancel_deliveries()


def _fail(group: Sequence[_Joined], error: KafkaUnavailable) -> None:
    for joined in group:
        if not joined.outcome.done():
            joined.outcome.set_exception(error)
            joined.outcome.exception()  # retrieved: a request that gave up no longer looks


def _discard(acknowledgements: list[asyncio.Future[Any]]) -> None:
    # the transaction is aborted: nobody awaits these, and their errors must not be reported
    # as never retrieved
    for acknowledgement in acknowledgements:
        if acknowledgement.done():
            if not acknowledgement.cancelled():
                acknowledgement.exception()
        else:
            acknowledgement.cancel()
