"""When the aggregator flushes (`FlushPolicy`, pure) and the flush itself (`Checkpointer`).

A flush writes each dirty partition in a transaction of its own: its dead letters are settled
first, then its deltas and its next offset go to PostgreSQL together (see distcount_store). A
committed partition starts afresh from the offset it stored; a fenced one (another process
flushed it meanwhile) drops what it folded and reads again from the stored offset; a failed
one keeps everything for the next attempt, after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from distcount_aggregator._deadletter import DeadLetters
from distcount_aggregator._errors import FlushImpossible
from distcount_aggregator._fold import PartitionState, next_tick_ms
from distcount_core import Backoff
from distcount_metrics import AggregatorMetrics
from distcount_store import Database, Fenced, PartitionFlush, StoreError

log = logging.getLogger("distcount.aggregator")

# the longest the loop waits for records before it looks at the clock again
MAX_WAIT_MS: Final = 500


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


class Checkpointer:
    def __init__(
        self,
        group_id: str,
        consumer: AIOKafkaConsumer,
        database: Database,
        dead_letters: DeadLetters,
        metrics: AggregatorMetrics,
    ) -> None:
        self._group = group_id
        self._consumer = consumer
        self._database = database
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._lag_commits: set[asyncio.Future[None]] = set()

    async def flush(self, states: Iterable[PartitionState], topic: str, reason: str) -> bool:
        """Flush every dirty partition of `states`; whether none failed. A failure no retry can
        mend (PostgreSQL refusing the statement itself) raises `FlushImpossible`."""
        dirty = []
        for state in states:
            state.reach()
            if state.flush_due and state.next_offset is not None:
                dirty.append(state)
        if not dirty:
            return True
        results = await asyncio.gather(
            *(self._flush_one(state, topic, reason) for state in dirty), return_exceptions=True
        )
        committed: dict[TopicPartition, int] = {}
        ok = True
        for state, result in zip(dirty, results, strict=True):
            if isinstance(result, BaseException):
                ok = False
                self._failed(state, reason, result)
            elif isinstance(result, Fenced):
                await self._fenced(state, topic, result)
            else:
                if state.dirty:
                    assert state.folded_until is not None
                    committed[TopicPartition(topic, state.partition)] = state.folded_until
                state.committed()
                self._dead_letters.forget(state.partition)
        if committed:
            task = asyncio.ensure_future(self._commit_for_lag(committed))
            self._lag_commits.add(task)
            task.add_done_callback(self._lag_commits.discard)
        return ok

    async def close(self) -> None:
        """Lag-only commits still waiting for a coordinator are not worth waiting for."""
        for task in self._lag_commits:
            task.cancel()
        await asyncio.gather(*self._lag_commits, return_exceptions=True)

    async def _flush_one(self, state: PartitionState, topic: str, reason: str) -> Fenced | int:
        start = time.perf_counter()
        outcome, rows = "failed", 0
        try:
            await self._dead_letters.settle(state.partition)
            next_offset = state.next_offset
            assert next_offset is not None
            as_of = state.as_of_ms
            result = await self._database.flush(
                PartitionFlush(
                    group_id=self._group,
                    topic=topic,
                    partition=state.partition,
                    expected_offset=state.stored_offset,
                    next_offset=next_offset,
                    deltas=state.deltas,
                    as_of=None if as_of is None else datetime.fromtimestamp(as_of / 1000, UTC),
                )
            )
            outcome, rows = ("fenced", 0) if isinstance(result, Fenced) else ("committed", result)
            return result
        finally:
            duration_s = time.perf_counter() - start
            self._metrics.on_flush(state.partition, reason, outcome, rows, duration_s)

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

    async def _fenced(self, state: PartitionState, topic: str, fenced: Fenced) -> None:
        log.warning(
            "partition %d was flushed by another process (stored offset %s, expected %s): "
            "dropping %d entries and reading again from the stored offset",
            state.partition,
            fenced.stored_offset,
            state.stored_offset,
            state.entries,
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
