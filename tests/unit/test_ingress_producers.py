"""Producers that hang: abandoned and replaced within bounds, and readiness that says so.

The fakes stand in for aiokafka's producer down to the parts the ingress reaches into (its
sender task, accumulator and client), hanging where a producer that lost its broker hangs. The
same scenario against a real broker, killed, is tests/faults/test_broker_killed.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, ProducerClosed

from distcount_config import load
from distcount_ingress import KafkaPublisher, KafkaUnavailable, _producers, _publisher
from distcount_ingress._producers import ProducerSlot

TOPIC = "t"


class FakeSender:
    def __init__(self) -> None:
        self.sender_task: asyncio.Task[None] | None = None
        self.requests: list[asyncio.Task[object]] = []

    def start(self) -> None:
        self.sender_task = asyncio.create_task(self._routine())

    async def _routine(self) -> None:
        # as aiokafka's: a request retries while no coordinator answers, and a cancelled
        # sender waits for the requests it had under way
        request = asyncio.create_task(asyncio.Event().wait())
        self.requests.append(request)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await request


class FakeAccumulator:
    def __init__(self) -> None:
        self.flushed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failed_with: BaseException | None = None
        self._batches: dict[str, list[Any]] = {}
        self._pending_batches: set[Any] = set()

    def fail_all(self, exc: BaseException) -> None:
        self.failed_with = exc
        if not self.flushed.done():
            self.flushed.set_result(None)


class FakeCluster:
    def topics(self) -> set[str]:
        return {TOPIC}


@dataclass(frozen=True)
class RecordMetadata:
    """What aiokafka resolves a sent record's future to, as far as the publisher reads it."""

    partition: int
    offset: int


class FakeClient:
    def __init__(self) -> None:
        self.closed = False
        self._sync_task: asyncio.Task[None] | None = asyncio.create_task(self._md_synchronizer())
        self.metadata_error: Exception | None = None
        self._metadata_failed = asyncio.Event()

    async def _md_synchronizer(self) -> None:
        await self._metadata_failed.wait()
        assert self.metadata_error is not None
        raise self.metadata_error

    def fail_metadata(self, error: Exception) -> None:
        self.metadata_error = error
        self._metadata_failed.set()

    async def fetch_all_metadata(self) -> FakeCluster:
        return FakeCluster()

    async def close(self) -> None:
        # as aiokafka's: a metadata task that ended with an error raises it here again
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        self.closed = True


class FakeBuilder:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, timestamp: None, key: bytes, value: bytes) -> object:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        pass


class FakeProducer:
    """Starts at once; stops only once its records are flushed, which never happens by itself;
    a transaction's abort, and its begin or commit if told so, wait on a broker that never
    answers."""

    def __init__(self, *, hang_in: str | None = None) -> None:
        self.hang_in = hang_in
        self.offset = -1
        self.client = FakeClient()
        self._sender = FakeSender()
        self._message_accumulator = FakeAccumulator()

    async def start(self) -> None:
        self._sender.start()

    async def stop(self) -> None:
        # aiokafka's: the flush, or the end of the sender task, whichever comes first
        flush = asyncio.ensure_future(self._message_accumulator.flushed)
        task = self._sender.sender_task
        assert task is not None
        await asyncio.wait([flush, task], return_when=asyncio.FIRST_COMPLETED)
        await self.client.close()

    async def begin_transaction(self) -> None:
        if self.hang_in == "begin":
            await asyncio.Event().wait()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder()

    async def send_batch(
        self, batch: FakeBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(RecordMetadata(partition=partition, offset=self.offset + 1))
        self.offset += batch.record_count()
        return future

    async def commit_transaction(self) -> None:
        if self.hang_in == "commit":
            await asyncio.Event().wait()

    async def abort_transaction(self) -> None:
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_producers, "_STOP_TIMEOUT_S", 0.2)
    monkeypatch.setattr(_producers, "_CLOSE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(_publisher, "_END_TIMEOUT_S", 0.2)


async def test_a_producer_that_does_not_stop_is_abandoned_and_what_it_left_is_closed() -> None:
    producer = FakeProducer()
    await producer.start()
    async with asyncio.timeout(2):
        await _producers._retire(producer, "test producer")
    assert isinstance(producer._message_accumulator.failed_with, ProducerClosed)
    sender = producer._sender.sender_task
    assert sender is not None
    assert sender.done()
    assert all(request.done() for request in producer._sender.requests)
    assert producer.client.closed


async def test_a_stuck_producer_is_replaced_within_the_bounds() -> None:
    made: list[FakeProducer] = []

    def factory() -> FakeProducer:
        made.append(FakeProducer())
        return made[-1]

    slot = ProducerSlot("test producer", factory, start_timeout_s=1)
    slot.start()
    assert await slot.wait_started(1)
    first = slot.producer
    slot.replace(first, "it broke")
    assert slot.producer is None
    assert slot.broken() == "reconnecting after: it broke"
    assert await slot.wait_started(2)
    assert slot.producer is made[1]
    assert slot.broken() is None
    assert made[0].client.closed
    await slot.close()
    assert made[1].client.closed


@contextlib.contextmanager
def _fake_producers(
    monkeypatch: pytest.MonkeyPatch, transactional: Callable[[], FakeProducer]
) -> Iterator[None]:
    def single(settings: Any) -> Callable[[], FakeProducer]:
        return FakeProducer

    def transactions(settings: Any, transactional_id: str) -> Callable[[], FakeProducer]:
        return transactional

    with monkeypatch.context() as patch:
        patch.setattr(_publisher, "single_producer_factory", single)
        patch.setattr(_publisher, "transactional_producer_factory", transactions)
        yield


async def _publisher_with(
    monkeypatch: pytest.MonkeyPatch, transactional: Callable[[], FakeProducer]
) -> KafkaPublisher:
    settings = load({"DISTCOUNT_TOPIC": TOPIC, "DISTCOUNT_PRODUCE_TIMEOUT_MS": "200"})
    with _fake_producers(monkeypatch, transactional):
        publisher = KafkaPublisher(settings)
    publisher.start()
    assert await publisher.wait_started(1)
    return publisher


@pytest.mark.parametrize("where", ["begin", "commit"])
async def test_a_transaction_that_hangs_is_given_up_and_its_producer_replaced(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    made: list[FakeProducer] = []
    # the first transactional producer hangs, its replacement does not
    hang_in: Iterator[str | None] = itertools.chain([where], itertools.repeat(None))

    def factory() -> FakeProducer:
        made.append(FakeProducer(hang_in=next(hang_in)))
        return made[-1]

    publisher = await _publisher_with(monkeypatch, factory)
    try:
        await publisher.check(1)
        async with asyncio.timeout(1):
            with pytest.raises(KafkaUnavailable, match="within 200 ms"):
                await publisher.publish_batch([(b"k", b"v")])
        # the begin (or the commit) ends at its bound, the abort at its own, the producer is
        # replaced: until the replacement is connected, readiness names the cause
        committer = publisher._committer
        assert committer is not None
        await asyncio.wait([committer], timeout=2)
        assert publisher._transactional.producer is None
        with pytest.raises(KafkaUnavailable, match="transactions are not available"):
            await publisher.check(1)
        assert await publisher.wait_started(2)
        assert publisher._transactional.producer is made[1]
        await publisher.check(1)
        await publisher.publish_batch([(b"k", b"v")])
        assert made[0].client.closed
    finally:
        await publisher.close()


async def _end_sender(producer: FakeProducer) -> None:
    # as aiokafka's sender ends on a fatal error (fenced, out of order)
    sender = producer._sender.sender_task
    assert sender is not None
    sender.cancel()
    for request in producer._sender.requests:
        request.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender


async def _end_metadata_task(producer: FakeProducer) -> None:
    # as aiokafka's metadata task ends under uvloop, writing to a socket the broker closed
    producer.client.fail_metadata(RuntimeError("unable to perform operation"))
    task = producer.client._sync_task
    assert task is not None
    await asyncio.wait([task])


@pytest.mark.parametrize(
    ("end", "cause"),
    [(_end_sender, "its sender has ended"), (_end_metadata_task, "its metadata task has ended")],
)
async def test_a_transactional_producer_that_can_no_longer_send_is_replaced_when_found(
    monkeypatch: pytest.MonkeyPatch, end: Callable[[FakeProducer], Awaitable[None]], cause: str
) -> None:
    made: list[FakeProducer] = []

    def factory() -> FakeProducer:
        made.append(FakeProducer())
        return made[-1]

    publisher = await _publisher_with(monkeypatch, factory)
    try:
        await end(made[0])
        # found by the readiness probe, as by the next batch
        with pytest.raises(KafkaUnavailable, match=f"transactions are not available .*{cause}"):
            await publisher.check(1)
        with pytest.raises(KafkaUnavailable, match=cause):
            await publisher.publish_batch([(b"k", b"v")])
        assert await publisher.wait_started(2)
        assert publisher._transactional.producer is made[1]
        await publisher.check(1)
        await publisher.publish_batch([(b"k", b"v")])
        assert made[0].client.closed
    finally:
        await publisher.close()


class HeldProducer(FakeProducer):
    """Its commits wait until released, one at a time; it keeps what each transaction sent, in
    the order it was handed over (two partitions)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Semaphore(0)
        self.transactions: list[list[tuple[int, bytes]]] = []
        self.fail_next_commit = False

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def begin_transaction(self) -> None:
        self.transactions.append([])

    async def send_batch(
        self, batch: FakeBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[RecordMetadata]:
        self.transactions[-1].extend((partition, key) for key, _ in batch.records)
        return await super().send_batch(batch, topic, partition=partition)

    async def commit_transaction(self) -> None:
        await self.release.acquire()
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise KafkaConnectionError("the broker went away")

    async def abort_transaction(self) -> None:
        pass


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):  # loop iterations: each lets the publisher's tasks take a step
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the publisher never got there")


async def test_batches_that_arrive_during_a_transaction_share_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = HeldProducer()
    publisher = await _publisher_with(monkeypatch, lambda: producer)
    try:
        first = asyncio.create_task(publisher.publish_batch([(b"a1", b"v"), (b"b1", b"v")]))
        await _until(lambda: len(producer.transactions) == 1)
        # three requests arrive while the first transaction waits for its commit
        later = [
            asyncio.create_task(publisher.publish_batch(records))
            for records in (
                [(b"a2", b"v"), (b"a3", b"v")],
                [(b"b2", b"v")],
                [(b"a4", b"v"), (b"b3", b"v")],
            )
        ]
        await asyncio.sleep(0.01)
        assert len(producer.transactions) == 1, "they wait for the running transaction"
        producer.release.release()
        producer.release.release()
        written = [await first, *await asyncio.gather(*later)]
        assert len(producer.transactions) == 2, "the three joined one transaction"
        assert sorted(key for _, key in producer.transactions[1]) == [
            b"a2",
            b"a3",
            b"a4",
            b"b2",
            b"b3",
        ]
        # each request is answered with its own records' highest offsets, per partition
        offsets = _offsets_by_key(producer)
        for records, answer in zip(
            [[b"a1", b"b1"], [b"a2", b"a3"], [b"b2"], [b"a4", b"b3"]], written, strict=True
        ):
            expected: dict[int, int] = {}
            for key in records:
                partition, offset = offsets[key]
                expected[partition] = max(offset, expected.get(partition, -1))
            assert answer == expected
    finally:
        await publisher.close()


def _offsets_by_key(producer: HeldProducer) -> dict[bytes, tuple[int, int]]:
    """Where each record went: the fake numbers records in the order it got them, across its
    partitions, which is enough to tell them apart."""
    sent = [record for transaction in producer.transactions for record in transaction]
    return {key: (partition, offset) for offset, (partition, key) in enumerate(sent)}


async def test_a_transaction_that_fails_fails_each_of_its_batches_and_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = HeldProducer()
    publisher = await _publisher_with(monkeypatch, lambda: producer)
    try:
        producer.fail_next_commit = True
        first = asyncio.create_task(publisher.publish_batch([(b"a1", b"v")]))
        await _until(lambda: len(producer.transactions) == 1)
        joined = [asyncio.create_task(publisher.publish_batch([(b"a2", b"v")])) for _ in range(2)]
        await asyncio.sleep(0.01)
        producer.release.release()
        with pytest.raises(KafkaUnavailable, match="the broker went away"):
            await first
        await _until(lambda: len(producer.transactions) == 2)
        producer.release.release()
        answers = await asyncio.gather(*joined)
        assert [key for _, key in producer.transactions[1]] == [b"a2", b"a2"]
        offsets = sorted(offset for answer in answers for offset in answer.values())
        assert offsets == [1, 2], "each its own record, in the one transaction"
    finally:
        await publisher.close()


async def test_a_batch_that_gives_up_before_a_transaction_takes_it_is_never_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = HeldProducer()
    publisher = await _publisher_with(monkeypatch, lambda: producer)
    try:
        first = asyncio.create_task(publisher.publish_batch([(b"a1", b"v")]))
        await _until(lambda: len(producer.transactions) == 1)
        # the produce timeout (200 ms) passes while the first transaction holds the producer
        with pytest.raises(KafkaUnavailable, match="earlier batches kept Kafka busy"):
            await publisher.publish_batch([(b"gave-up", b"v")])
        cancelled = asyncio.create_task(publisher.publish_batch([(b"cancelled", b"v")]))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        producer.release.release()
        with pytest.raises(KafkaUnavailable, match="did not confirm the batch's commit"):
            await first  # its own 200 ms passed too: answered 503, committed all the same
        await asyncio.sleep(0.05)
        sent = [key for transaction in producer.transactions for _, key in transaction]
        assert sent == [b"a1"]
    finally:
        await publisher.close()
