"""When the aggregator flushes (`FlushPolicy`, pure) and the flush itself (`Checkpointer`).

A flush writes each dirty partition in a transaction of its own: its dead letters are settled
first, then its deltas and its next offset go to PostgreSQL together (see distcount_store). A
committed partition starts afresh from the offset it stored; a fenced one (another process
flushed it meanwhile) drops what it folded and reads again from the stored offset; a failed
one keeps everything for the next attempt, after a backoff.

The aggregator's flush on a tick runs while it goes on folding: `Checkpointer.begin` takes what
each dirty partition folded (`PartitionState.take`) and starts the transactions, the records
that arrive meanwhile fold into the partitions' states, and `Checkpointer.finish` applies the
outcome (a failed partition gets back what was taken, ahead of what came since). PostgreSQL
writes on one core while the fold runs on the other, instead of the fold waiting for it.

A flush that drops a large state also hands the memory it held back to the system (see
`Checkpointer.finish`): otherwise the process would keep its peak size for good.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from distcount_aggregator._deadletter import DeadLetters
from distcount_aggregator._errors import FlushImpossible
from distcount_aggregator._fold import PartitionState, Taken, next_tick_ms
from distcount_core import Backoff
from distcount_metrics import AggregatorMetrics
from distcount_store import FORGET_CHUNK, Database, Fenced, PartitionFlush, StoreError, Written

log = logging.getLogger("distcount.aggregator")

# the longest the loop waits for records before it looks at the clock again
MAX_WAIT_MS: Final = 500
# a flush that drops at least this many entries (some 10 MB or more) hands their memory back
RELEASE_AFTER_ENTRIES: Final = 100_000
# how often a flush that landed is followed by deleting the expired idempotency ids
FORGET_IDS_EVERY_S: Final = 60.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library is another (musl, macOS, Windows)."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (AttributeError, OSError, ValueError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM: Final = _malloc_trim()


def release_memory() -> bool:
    """Hand memory the process no longer uses back to the system; whether the C heap could be
    trimmed (glibc only: elsewhere only the collection runs).

    First a full collection: the garbage that only the cycle collector frees (the driver's and
    the event loop's, made while the state lived) sits in Python's arenas, and an arena goes back
    to the system only once every object in it is freed. Then `malloc_trim(0)`: the large tables
    of a state's dicts live on glibc's heap, which returns freed memory only from its top by
    itself, and after a large free raises the size under which it keeps memory; trimming returns
    every whole free page. Some 20 to 40 ms after a flush of a million entries, most of it the
    collection (see benchmarks/memory.py).
    """
    gc.collect()
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


class FlushPolicy:
    """Flush on ticks aligned to `interval_ms`, early when the live entries reach
    `max_live_entries`, and never while a failed flush waits out its backoff."""

    def __init__(self, interval_ms: int, max_live_entries: int, now_ms: int) -> None:
        self._interval_ms = interval_ms
        self._max_live_entries = max_live_entries
        self._next_tick_ms = next_tick_ms(now_ms, interval_ms)
        self._backoff = Backoff(0.25, 10.0)
        self._retry_at_ms = 0.0

    def wait_ms(self, now_ms: int) -> int:
        """How long a fetch may wait for records before the next tick is due."""
        return max(0, min(self._next_tick_ms - now_ms, MAX_WAIT_MS))

    def due(self, now_ms: int, live_entries: int) -> str | None:
        """The reason to flush now ("tick" or "memory"), or None."""
        reason = None
        if now_ms >= self._next_tick_ms:
            self._next_tick_ms = next_tick_ms(now_ms, self._interval_ms)
            reason = "tick"
        elif live_entries >= self._max_live_entries:
            reason = "memory"
        return None if self.backing_off(now_ms) else reason

    def full(self, live_entries: int) -> bool:
        return live_entries >= self._max_live_entries

    def backing_off(self, now_ms: int) -> bool:
        return now_ms < self._retry_at_ms

    def flushed(self, ok: bool, now_ms: int) -> None:
        if ok:
            self._backoff.reset()
            self._retry_at_ms = 0.0
        else:
            self._retry_at_ms = now_ms + self._backoff.next_s() * 1000


@dataclass(frozen=True)
class _Part:
    """One partition of a flight: its state, what the flush took of it, and how many of its
    dead-letter sends were started by then (the ones the flush settles for good)."""

    state: PartitionState
    taken: Taken
    dead_letters: int


@dataclass(frozen=True)
class Flight:
    """A flush under way (`Checkpointer.begin`), until `Checkpointer.finish` lands it."""

    parts: list[_Part]
    topic: str
    reason: str
    task: asyncio.Future[list[Fenced | Written | BaseException]]

    @property
    def partitions(self) -> set[int]:
        return {part.state.partition for part in self.parts}

    @property
    def entries(self) -> int:
        return sum(part.taken.entries for part in self.parts)

    def done(self) -> bool:
        return self.task.done()


class Checkpointer:
    def __init__(
        self,
        group_id: str,
        consumer: AIOKafkaConsumer,
        database: Database,
        dead_letters: DeadLetters,
        metrics: AggregatorMetrics,
        *,
        id_window_s: int = 86_400,
        forget: Callable[[], object] | None = None,
    ) -> None:
        """`forget` is called after a flush that dropped a large state, before its memory is
        handed back; for the aggregator, its decoder's `known.clear`. The values a decoder keeps
        were made while folding, among the state's objects, in the same arenas of Python's
        allocator, which go back to the system only once empty: a few of them left in each keep
        most of a large state resident (see benchmarks/memory.py). The cost: the next records
        decode their values again, at most `MAX_KNOWN_VALUES` of them.

        `id_window_s`: how long an idempotency id counts once (DISTCOUNT_IDEMPOTENCY_WINDOW_S);
        a landed flight is followed, every FORGET_IDS_EVERY_S, by deleting the older ids."""
        self._group = group_id
        self._id_window_s = id_window_s
        self._next_forget = 0.0
        self._forgetting: asyncio.Future[None] | None = None
        self._consumer = consumer
        self._database = database
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._forget = forget
        self._lag_commits: set[asyncio.Future[None]] = set()

    async def flush(self, states: Iterable[PartitionState], topic: str, reason: str) -> bool:
        """Flush every dirty partition of `states` and wait for the outcome; whether none failed.
        A failure no retry can mend (PostgreSQL refusing the statement itself) raises
        `FlushImpossible`."""
        flight = self.begin(states, topic, reason)
        return True if flight is None else await self.finish(flight)

    def begin(self, states: Iterable[PartitionState], topic: str, reason: str) -> Flight | None:
        """Take what each dirty partition of `states` folded and start writing it, one
        transaction a partition; None when nothing is dirty. The states go on folding
        meanwhile; `finish` must land the flight before another begins."""
        parts = []
        for state in states:
            state.reach()
            if state.flush_due and state.next_offset is not None:
                started = self._dead_letters.started(state.partition)
                parts.append(_Part(state, state.take(), started))
        if not parts:
            return None
        writes = (self._flush_one(part, topic, reason) for part in parts)
        task = asyncio.ensure_future(asyncio.gather(*writes, return_exceptions=True))
        return Flight(parts, topic, reason, task)

    async def finish(self, flight: Flight) -> bool:
        """Wait for `flight` and apply its outcome to each partition's state; whether none
        failed (`FlushImpossible` if one can never succeed)."""
        results = await flight.task
        committed: dict[TopicPartition, int] = {}
        ok = True
        dropped = 0  # entries whose memory this flush frees
        impossible: FlushImpossible | None = None
        for part, result in zip(flight.parts, results, strict=True):
            state, taken = part.state, part.taken
            if isinstance(result, BaseException):
                ok = False
                state.give_back(taken)
                try:
                    self._failed(state, flight.reason, result)
                except FlushImpossible as exc:
                    impossible = impossible or exc
                continue
            dropped += taken.entries
            if isinstance(result, Fenced):
                await self._fenced(state, flight.topic, result, taken.entries)
            else:
                if taken.folded_until is not None:
                    committed[TopicPartition(flight.topic, state.partition)] = taken.folded_until
                state.landed(taken)
                self._dead_letters.forget(state.partition, part.dead_letters)
            # written or dropped: the flight holds the deltas last, and they are freed before
            # the memory is handed back below
            taken.deltas = {}
        if impossible is not None:
            raise impossible
        if dropped >= RELEASE_AFTER_ENTRIES:
            # first what keeps the state's memory from being freed: the decoder's memory of
            # values refills from the next records (at most MAX_KNOWN_VALUES decoded again)
            if self._forget is not None:
                self._forget()
            release_memory()
        if committed:
            task = asyncio.ensure_future(self._commit_for_lag(committed))
            self._lag_commits.add(task)
            task.add_done_callback(self._lag_commits.discard)
            self._forget_expired_ids()
        return ok

    async def close(self) -> None:
        """Lag-only commits still waiting for a coordinator are not worth waiting for, nor is
        deleting expired ids (the next aggregator goes on with it)."""
        tasks = [*self._lag_commits, *([self._forgetting] if self._forgetting else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget_expired_ids(self) -> None:
        """Start deleting the ids older than the window, if it is time and none is under way:
        in chunks, beside the loop, until a chunk comes back short."""
        now = time.monotonic()
        if now < self._next_forget or (self._forgetting and not self._forgetting.done()):
            return
        self._next_forget = now + FORGET_IDS_EVERY_S
        self._forgetting = asyncio.ensure_future(self._forget_ids())

    async def _forget_ids(self) -> None:
        try:
            while await self._database.forget_ids(self._id_window_s) >= FORGET_CHUNK:
                pass
        except StoreError as exc:  # tried again after the next interval
            log.warning("cannot delete the expired idempotency ids: %s", exc)

    async def _flush_one(self, part: _Part, topic: str, reason: str) -> Fenced | Written:
        partition, taken = part.state.partition, part.taken
        start = time.perf_counter()
        outcome, rows = "failed", 0
        try:
            # every send started so far, those of records folded since the take included
            await self._dead_letters.settle(partition)
            as_of = taken.as_of_ms
            result = await self._database.flush(
                PartitionFlush(
                    group_id=self._group,
                    topic=topic,
                    partition=partition,
                    expected_offset=taken.expected_offset,
                    next_offset=taken.next_offset,
                    deltas=taken.deltas,
                    as_of=None if as_of is None else datetime.fromtimestamp(as_of / 1000, UTC),
                    keyed=taken.keyed,
                    id_window_s=self._id_window_s,
                )
            )
            if isinstance(result, Fenced):
                outcome = "fenced"
            else:
                outcome, rows = "committed", result.rows
                self._repeated(partition, taken, result)
            return result
        finally:
            duration_s = time.perf_counter() - start
            self._metrics.on_flush(partition, reason, outcome, rows, duration_s)

    def _repeated(self, partition: int, taken: Taken, written: Written) -> None:
        """Report the records with an id that were not counted: in the flush's own state
        (folded twice) or in PostgreSQL (claimed by an earlier flush)."""
        repeated = taken.repeated + written.repeated
        if not repeated:
            return
        different = taken.conflicting + written.conflicting
        self._metrics.on_repeated(repeated - different, different)
        if different:
            log.warning(
                "partition %d: %d records reuse an idempotency id with another increment than "
                "the one it counted; they are not counted",
                partition,
                different,
                extra={"partition": partition, "records": different},
            )

    def _failed(self, state: PartitionState, reason: str, error: BaseException) -> None:
        retriable = isinstance(error, KafkaError) or (
            isinstance(error, StoreError) and error.retriable
        )
        if not retriable:
            raise FlushImpossible(
                f"the flush of partition {state.partition} cannot succeed by retrying: {error}"
            ) from error
        log.warning(
            "flush of partition %d (%s) failed, kept for a retry: %s",
            state.partition,
            reason,
            error,
            extra={"partition": state.partition, "reason": reason, "error": str(error)},
        )

    async def _fenced(
        self, state: PartitionState, topic: str, fenced: Fenced, taken_entries: int
    ) -> None:
        log.warning(
            "partition %d was flushed by another process (stored offset %s, expected %s): "
            "dropping %d entries and reading again from the stored offset",
            state.partition,
            fenced.stored_offset,
            state.stored_offset,
            taken_entries + state.entries,  # what the flush took, and what came since
            extra={"partition": state.partition, "offset": fenced.stored_offset},
        )
        state.reset(fenced.stored_offset)
        self._dead_letters.forget(state.partition)
        self._metrics.on_dropped([state.partition])
        tp = TopicPartition(topic, state.partition)
        if tp in self._consumer.assignment():
            await seek(self._consumer, tp, fenced.stored_offset)

    async def _commit_for_lag(self, offsets: dict[TopicPartition, int]) -> None:
        # only for lag dashboards; PostgreSQL holds the offsets that count
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.debug("lag-only offset commit skipped: %s", exc)


async def seek(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int | None) -> None:
    """To `offset`, or to the beginning when nothing is stored: never to the Kafka-committed
    offset, which is only ever written for lag dashboards."""
    if offset is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, offset)
