"""A flush that runs while the aggregator goes on folding: what it takes, what the state keeps
folding meanwhile, and how each outcome lands (committed, failed, fenced), dead letters included."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from distcount_aggregator import DeadLetters, PartitionState, fold
from distcount_aggregator import _checkpoint as checkpoint
from distcount_codec import RecordDecoder
from distcount_metrics import AggregatorMetrics
from distcount_store import DatabaseUnavailable, Fenced, PartitionFlush, Written

BUCKET_MS = 1000


@dataclass(frozen=True)
class Record:
    offset: int
    value: bytes
    timestamp: int = 1500
    partition: int = 0
    key: bytes | None = None
    headers: tuple[()] = ()


def records(first: int, *keys: str) -> list[Record]:
    return [Record(first + i, orjson.dumps({"key": key, "value": 1})) for i, key in enumerate(keys)]


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[Any, int]] = []

    async def commit(self, offsets: Any) -> None:
        return None

    def assignment(self) -> set[Any]:
        return set()


class Database:
    """Holds each flush until `release`, then answers with `outcome`."""

    def __init__(self, outcome: Written | Fenced | BaseException | None = None) -> None:
        self.outcome = outcome
        self.flushes: list[PartitionFlush] = []
        self.gate = asyncio.Event()

    async def flush(self, flush: PartitionFlush) -> Fenced | Written:
        self.flushes.append(flush)
        await self.gate.wait()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if self.outcome is None:
            return Written(sum(len(bucket) for bucket in flush.deltas.values()))
        return self.outcome


class Producer:
    """A dead-letter producer whose sends the broker acknowledges at once."""

    def __init__(self) -> None:
        self.sent: list[bytes | None] = []

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def checkpointer(database: Database, dead_letters: DeadLetters) -> checkpoint.Checkpointer:
    return checkpoint.Checkpointer(
        "g",
        Consumer(),
        database,  # type: ignore[arg-type]
        dead_letters,
        AggregatorMetrics(),
    )


def folded(state: PartitionState, batch: list[Record], decoder: RecordDecoder) -> None:
    assert fold(state, batch, BUCKET_MS, decoder) == []


async def test_folding_goes_on_while_the_flush_writes_what_it_took() -> None:
    decoder, database = RecordDecoder(), Database()
    state = PartitionState(0, stored_offset=100)
    folded(state, records(100, "a", "b", "a"), decoder)
    cp = checkpointer(database, DeadLetters(Producer(), "dead"))

    flight = cp.begin([state], "t", "tick")
    assert flight is not None
    assert (flight.entries, state.entries, state.dirty) == (2, 0, False)
    folded(state, records(103, "a", "c"), decoder)  # while the flush runs
    await asyncio.sleep(0)
    (written,) = database.flushes
    assert (written.expected_offset, written.next_offset) == (100, 103)
    assert written.deltas == {1000: {"a": 2, "b": 1}}

    database.gate.set()
    assert await cp.finish(flight)
    # PostgreSQL holds 103; what came since is the next flush's, from there
    assert (state.stored_offset, state.folded_until, state.position) == (103, 105, 105)
    assert state.deltas == {1000: {"a": 1, "c": 1}}
    # the landed flight lets go of what it wrote, so a large flush's memory can be handed back
    assert [part.taken.deltas for part in flight.parts] == [{}]
    await cp.close()


async def test_a_failed_flush_gives_back_what_it_took_ahead_of_what_came_since() -> None:
    decoder = RecordDecoder()
    database = Database(DatabaseUnavailable("PostgreSQL is down"))
    state = PartitionState(0, stored_offset=100)
    folded(state, records(100, "a", "b"), decoder)
    state.as_of_ms = 7
    cp = checkpointer(database, DeadLetters(Producer(), "dead"))

    flight = cp.begin([state], "t", "tick")
    assert flight is not None
    folded(state, records(102, "a", "c"), decoder)
    database.gate.set()
    assert not await cp.finish(flight)
    assert (state.stored_offset, state.folded_until, state.as_of_ms) == (100, 104, 7)
    assert state.deltas == {1000: {"a": 2, "b": 1, "c": 1}}

    # the next flush writes both, from the offset still stored
    database.outcome = None
    assert await cp.flush([state], "t", "tick")
    assert (database.flushes[-1].expected_offset, database.flushes[-1].next_offset) == (100, 104)
    assert database.flushes[-1].deltas == {1000: {"a": 2, "b": 1, "c": 1}}
    assert state.stored_offset == 104
    await cp.close()


async def test_a_failed_flush_with_nothing_folded_since_restores_the_state_whole() -> None:
    decoder = RecordDecoder()
    database = Database(DatabaseUnavailable("PostgreSQL is down"))
    state = PartitionState(0, stored_offset=None)
    folded(state, records(0, "a"), decoder)
    cp = checkpointer(database, DeadLetters(Producer(), "dead"))
    flight = cp.begin([state], "t", "tick")
    assert flight is not None
    database.gate.set()
    assert not await cp.finish(flight)
    assert (state.stored_offset, state.folded_until, state.deltas) == (None, 1, {1000: {"a": 1}})
    await cp.close()


async def test_a_fenced_flush_drops_what_it_took_and_what_came_since() -> None:
    decoder = RecordDecoder()
    database = Database(Fenced(150))
    state = PartitionState(0, stored_offset=100)
    folded(state, records(100, "a"), decoder)
    cp = checkpointer(database, DeadLetters(Producer(), "dead"))
    flight = cp.begin([state], "t", "tick")
    assert flight is not None
    folded(state, records(101, "b"), decoder)
    database.gate.set()
    assert await cp.finish(flight)
    assert (state.stored_offset, state.position, state.folded_until, state.deltas) == (
        150,
        150,
        None,
        {},
    )
    await cp.close()


async def test_dead_letters_of_records_folded_since_wait_for_the_next_flush() -> None:
    producer = Producer()
    dead_letters = DeadLetters(producer, "dead")
    database = Database()
    state = PartitionState(0, stored_offset=0)
    bad = Record(0, b"not json")
    await dead_letters.send(bad, "bad", "t")
    state.folded_until = state.position = 1
    cp = checkpointer(database, dead_letters)

    flight = cp.begin([state], "t", "tick")
    assert flight is not None
    later = Record(1, b"also not json")
    await dead_letters.send(later, "bad", "t")  # folded while the flush runs
    state.folded_until = state.position = 2
    database.gate.set()
    assert await cp.finish(flight)
    # the flush settled the first for good; the second is still the next flush's to settle
    assert dead_letters.started(0) == 1
    assert await cp.flush([state], "t", "tick")
    assert dead_letters.started(0) == 0
    assert state.stored_offset == 2
    await cp.close()
