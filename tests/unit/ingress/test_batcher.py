"""The batching of single records behind the publisher, around a fake producer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from distcount_ingress._batcher import Batcher

# --- the single-record batching behind the publisher ------------------------------------------


class FakeBuilder:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.capacity = capacity
        self.closed = False

    def append(self, *, timestamp: None, key: bytes, value: bytes) -> object | None:
        if self.closed or len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        self.closed = True


class FakeCluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}


class FakeClient:
    cluster = FakeCluster()


class FakeProducer:
    """Takes batches like aiokafka's send_batch; the test decides when each is acknowledged."""

    client = FakeClient()

    def __init__(self, capacity: int = 100, accepting: bool = True) -> None:
        self.capacity = capacity
        self.accepting = asyncio.Event()
        if accepting:
            self.accepting.set()
        self.sent: list[FakeBuilder] = []
        self.acknowledgements: list[asyncio.Future[Acked]] = []

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send_batch(
        self, batch: FakeBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Acked]:
        await self.accepting.wait()  # no room in the producer until the test says so
        assert batch.closed
        self.sent.append(batch)
        acknowledgement: asyncio.Future[Acked] = asyncio.get_running_loop().create_future()
        self.acknowledgements.append(acknowledgement)
        return acknowledgement


@dataclass(frozen=True)
class Acked:
    """What the producer's delivery future gives: the batch's base offset."""

    offset: int


async def _batcher(timeout_s: float = 5.0) -> Batcher:
    batcher = Batcher("t", timeout_s=timeout_s, on_error=lambda producer, exc: None)
    await batcher.learn_partitions(FakeProducer())
    return batcher


async def test_records_of_one_loop_iteration_share_a_batch_and_the_next_waits_for_its_ack() -> None:
    producer = FakeProducer()
    batcher = await _batcher()
    added = [batcher.add(producer, b"k", b"%d" % i) for i in range(3)]
    first = [outcome for outcome, _, _ in added]
    assert len({id(outcome) for outcome in first}) == 1
    # each record's place in its batch: its offset is the batch's base offset plus that
    assert [(partition, index) for _, partition, index in added] == [(0, 0), (0, 1), (0, 2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [len(b.records) for b in producer.sent] == [3]

    second = [batcher.add(producer, b"k", b"%d" % i)[0] for i in range(2)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(producer.sent) == 1  # the first batch is still on its way
    assert not second[0].done()

    producer.acknowledgements[0].set_result(Acked(offset=40))
    assert await first[0] == 40
    for _ in range(5):
        await asyncio.sleep(0)
    assert [len(b.records) for b in producer.sent] == [3, 2]
    producer.acknowledgements[1].set_result(Acked(offset=43))
    assert await second[0] == 43


async def test_a_full_batch_goes_at_once_and_the_record_starts_the_next() -> None:
    producer = FakeProducer(capacity=2)
    batcher = await _batcher()
    added = [batcher.add(producer, b"k", b"%d" % i) for i in range(3)]
    outcomes = [outcome for outcome, _, _ in added]
    assert [index for _, _, index in added] == [0, 1, 0]  # the third starts the next batch
    assert outcomes[0] is outcomes[1]
    assert outcomes[2] is not outcomes[0]
    for _ in range(5):
        await asyncio.sleep(0)
    assert [b.records for b in producer.sent] == [[(b"k", b"0"), (b"k", b"1")]]
    producer.acknowledgements[0].set_result(Acked(offset=0))
    for _ in range(5):
        await asyncio.sleep(0)
    assert [b.records for b in producer.sent][1:] == [[(b"k", b"2")]]
    producer.acknowledgements[1].set_result(Acked(offset=2))
    assert await outcomes[0] == 0
    assert await outcomes[2] == 2


async def test_a_batch_the_producer_has_no_room_for_by_the_deadline_is_never_sent() -> None:
    producer = FakeProducer(accepting=False)
    batcher = await _batcher(timeout_s=0.05)
    outcome, _, _ = batcher.add(producer, b"k", b"v")
    error = await outcome
    assert isinstance(error, str)
    assert "did not acknowledge the record within 50 ms" in error
    producer.accepting.set()  # room again: the dropped batch must not go after all
    await batcher.wait_delivered(1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert producer.sent == []


async def test_a_batch_handed_over_but_not_acknowledged_in_time_is_answered_at_the_deadline() -> (
    None
):
    producer = FakeProducer()
    batcher = await _batcher(timeout_s=0.05)
    outcome, _, _ = batcher.add(producer, b"k", b"v")
    error = await asyncio.wait_for(outcome, 1)
    assert isinstance(error, str)
    assert len(producer.sent) == 1  # handed over: it may still be written (a 503 says so)
    producer.acknowledgements[0].set_result(Acked(offset=7))
    await batcher.wait_delivered(1)
    assert await outcome == error  # a late acknowledgement does not turn the 503 into a 202
