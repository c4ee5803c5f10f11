"""The consume-fold-flush loop: each assigned partition folded into time buckets and flushed to
PostgreSQL exactly once, with the partition's offset stored in the same transaction.

One lock serialises folding, flushing and rebalancing, because aiokafka runs the rebalance
listener in its own task: a revocation must not flush a partition while the loop is flushing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from distcount_aggregator._deadletter import DeadLetters
from distcount_aggregator._errors import AssignmentFailed
from distcount_aggregator._fetch import GuardedFetch
from distcount_aggregator._fold import PartitionState, fold, next_tick_ms
from distcount_aggregator._stalls import Stalls
from distcount_codec import RecordDecoder
from distcount_config import Settings
from distcount_metrics import AggregatorMetrics
from distcount_store import Fenced, PartitionFlush, flush_partition, read_offsets

log = logging.getLogger("distcount.aggregator")

# PostgreSQL failures worth retrying: the server went away, or refused us for a while
_RETRIABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # a connection caught mid-operation by a server restart reports this
    asyncpg.InternalClientError,
    TimeoutError,
)
_MAX_BACKOFF_S = 10.0
# records folded between two looks at the event loop: heartbeats and flushes must not starve
MAX_RECORDS_PER_FETCH = 5000


class Aggregator:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        dead_letters: DeadLetters,
        metrics: AggregatorMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or AggregatorMetrics()
        self._consumer = consumer
        self._pool = pool
        self._dead_letters = dead_letters
        self._topic = settings.topic
        self._group = settings.group_id
        self._bucket_ms = settings.bucket_ms
        self._states: dict[int, PartitionState] = {}
        self._decoder = RecordDecoder()
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._paused = False
        self._generation = 0  # counts assignments
        self._background: set[asyncio.Future[None]] = set()
        self._fetcher = GuardedFetch(consumer, MAX_RECORDS_PER_FETCH)
        self._stalls = Stalls(settings, consumer, pool, self._metrics)
        self.listener = _Listener(self)

    # -- the loop -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stop(); then flush what is folded. Raises AssignmentFailed if fatal."""
        interval = self._settings.flush_interval_ms
        next_tick = next_tick_ms(_now_ms(), interval)
        try:
            while not self._stopping.is_set():
                self._raise_if_fatal()
                wait_ms = max(0, min(next_tick - _now_ms(), 500))
                generation = self._generation
                batches, stalled = await self._fetcher.fetch(wait_ms, self._positions)
                async with self._lock:
                    self._raise_if_fatal()
                    if generation != self._generation:
                        # maybe fetched before the assignment sought to the stored offsets, or a
                        # failed fetch moved a position past records nobody received: drop the
                        # lot and read every partition again from where it stands
                        for partition, state in self._states.items():
                            await self._seek(self._tp(partition), state.position)
                        assigned = self._consumer.assignment()
                        self._consumer.resume(
                            *(tp for s in stalled if (tp := self._tp(s.partition)) in assigned)
                        )
                        batches, stalled = {}, []
                    for tp, records in batches.items():
                        await self._fold(tp, records)
                    for stall in stalled:
                        self._stalls.stalled(stall)
                    await self._follow_positions()
                    await self._stalls.save_and_retry(self._states)
                    due = _now_ms() >= next_tick
                    if due or self.live_entries >= self._settings.max_live_entries:
                        if due:
                            next_tick = next_tick_ms(_now_ms(), interval)
                        await self._flush_when_allowed("tick" if due else "memory")
        finally:
            if self._fatal is None:
                async with self._lock:
                    await self._flush(self._states.values(), reason="shutdown")
            # lag-only commits still waiting for a coordinator are not worth waiting for
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
        self._raise_if_fatal()  # an assignment may have failed before the loop began

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self._topic, partition)

    def _positions(self) -> dict[TopicPartition, int | None]:
        return {self._tp(partition): state.position for partition, state in self._states.items()}

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise AssignmentFailed(str(self._fatal)) from self._fatal

    @property
    def live_entries(self) -> int:
        return sum(state.entries for state in self._states.values())

    def lag(self) -> dict[int, int]:
        """Per assigned partition, the records not folded yet, as of the last fetch."""
        lags = {}
        for partition, state in self._states.items():
            highwater = self._consumer.highwater(self._tp(partition))
            if highwater is not None and state.position is not None:
                lags[partition] = max(0, highwater - state.position)
        return lags

    async def _fold(self, tp: TopicPartition, records: list[Any]) -> None:
        state = self._states.get(tp.partition)
        if state is None:
            return  # revoked meanwhile
        position = state.position
        if position is not None and records and records[0].offset < position:
            # fetched again after a seek: counted already (fold skips them too)
            records = [r for r in records if r.offset >= position]
        self._metrics.on_fetched(tp.partition, records)
        if records:
            self._stalls.passed(tp.partition, records[-1].offset)
        for record, reason in fold(state, records, self._bucket_ms, self._decoder):
            await self._dead_letter(state, record, reason)
            self._metrics.on_dead_letter()

    async def _follow_positions(self) -> None:
        """Move past what the consumer skipped without returning records: the markers that end
        transactions, aborted records. The consumer's position never passes a record it has not
        returned, so storing it loses nothing, and an idle partition shows no lag."""
        for partition, state in self._states.items():
            position = await self._consumer.position(self._tp(partition))
            if state.position is None or position > state.position:
                # an empty partition gets a position too, so its lag can be reported
                state.position = position
                if position > (state.stored_offset or 0):
                    state.folded_until = position

    async def _dead_letter(self, state: PartitionState, record: Any, reason: str) -> None:
        state.dead_letters.append(await self._dead_letters.send(record, reason, self._topic))

    # -- flushing -------------------------------------------------------------------------------

    async def _flush_when_allowed(self, reason: str) -> None:
        if time.monotonic() < self._retry_at:
            self._pause_if_full()
            return
        if await self._flush(self._states.values(), reason):
            self._backoff_s = 0.0
            self._retry_at = 0.0
            if self._paused:
                self._consumer.resume(*self._stalls.fetchable(self._consumer.assignment()))
                self._paused = False
                log.info("flush succeeded again: fetching resumed")
        else:
            self._backoff_s = min(_MAX_BACKOFF_S, max(0.25, self._backoff_s * 2))
            self._retry_at = time.monotonic() + self._backoff_s
            self._pause_if_full()

    def _pause_if_full(self) -> None:
        if not self._paused and self.live_entries >= self._settings.max_live_entries:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning(
                "%d live entries and PostgreSQL cannot take them: fetching paused",
                self.live_entries,
            )

    async def _flush(self, states: Iterable[PartitionState], reason: str) -> bool:
        """Flush every dirty partition, each in its own transaction. False if any failed."""
        dirty = [state for state in states if state.dirty]
        if not dirty:
            return True
        results = await asyncio.gather(
            *(self._flush_one(s, reason) for s in dirty), return_exceptions=True
        )
        committed: dict[TopicPartition, int] = {}
        ok = True
        for state, result in zip(dirty, results, strict=True):
            if isinstance(result, BaseException):
                ok = False
                if not isinstance(result, (*_RETRIABLE, KafkaError, asyncpg.PostgresError)):
                    raise result
                log.warning(
                    "flush of partition %d (%s) failed, kept for a retry: %s: %s",
                    state.partition,
                    reason,
                    type(result).__name__,
                    result,
                )
            elif isinstance(result, Fenced):
                await self._fenced(state, result)
            else:
                committed[self._tp(state.partition)] = state.folded_until or 0
                state.committed()
        if committed:
            task = asyncio.ensure_future(self._commit_for_lag(committed))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return ok

    async def _flush_one(self, state: PartitionState, reason: str) -> Fenced | int:
        """Flush one partition: the event rows written, or `Fenced`."""
        start = time.perf_counter()
        outcome, rows = "failed", 0
        try:
            result = await self._write(state)
            if isinstance(result, Fenced):
                outcome = "fenced"
            else:
                outcome, rows = "committed", result
            return result
        finally:
            self._metrics.on_flush(
                state.partition, reason, outcome, rows, time.perf_counter() - start
            )

    async def _write(self, state: PartitionState) -> Fenced | int:
        await self._dead_letters.settle(state.dead_letters)
        assert state.folded_until is not None
        flush = PartitionFlush(
            group_id=self._group,
            topic=self._topic,
            partition=state.partition,
            expected_offset=state.stored_offset,
            next_offset=state.folded_until,
            deltas=state.deltas,
        )
        async with self._pool.acquire() as conn:
            try:
                return await flush_partition(conn, flush)
            except BaseException:
                # whatever state a failed flush left the connection in, the pool opens a new one
                conn.terminate()
                raise

    async def _fenced(self, state: PartitionState, fenced: Fenced) -> None:
        log.warning(
            "partition %d was flushed by another process (stored offset %s, expected %s): "
            "dropping %d entries and reading again from the stored offset",
            state.partition,
            fenced.stored_offset,
            state.stored_offset,
            state.entries,
        )
        state.reset(fenced.stored_offset)
        if state.partition in self._states:
            await self._seek(self._tp(state.partition), fenced.stored_offset)

    async def _seek(self, tp: TopicPartition, offset: int | None) -> None:
        if offset is None:
            # not the Kafka-committed offset, which is only ever written for lag dashboards
            await self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek(tp, offset)

    async def _commit_for_lag(self, offsets: dict[TopicPartition, int]) -> None:
        # only for lag dashboards; PostgreSQL holds the offsets that count
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.debug("lag-only offset commit skipped: %s", exc)

    # -- rebalancing ----------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            states = [
                self._states.pop(tp.partition) for tp in revoked if tp.partition in self._states
            ]
            flushed = await self._flush(states, reason="revocation")
            self._stalls.forget(state.partition for state in states)
            self._metrics.on_dropped([state.partition for state in states])
            if not flushed:
                log.warning("revoked partitions could not be flushed; their new owner reads again")

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            self._generation += 1
            self._paused = False  # a new assignment starts unpaused
            try:
                async with self._pool.acquire() as conn:
                    stored = await read_offsets(
                        conn, self._group, self._topic, [tp.partition for tp in assigned]
                    )
                fresh = [tp for tp in assigned if tp.partition not in stored]
                if fresh:
                    # one request for all: a seek per partition costs a round trip each
                    await self._consumer.seek_to_beginning(*fresh)
                for tp in assigned:
                    offset = stored.get(tp.partition)
                    if offset is not None:
                        self._consumer.seek(tp, offset)
                    self._states[tp.partition] = PartitionState(tp.partition, offset)
            except Exception as exc:
                log.exception("cannot read or seek to the stored offsets of %s", sorted(assigned))
                self._fatal = exc
                self._consumer.pause(*assigned)
                self._states.clear()
                self._stopping.set()
                return
            log.info(
                "assigned partitions %s at stored offsets %s",
                sorted(tp.partition for tp in assigned),
                {p: stored.get(p) for p in sorted(tp.partition for tp in assigned)},
            )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc] # aiokafka has no type hints
    def __init__(self, aggregator: Aggregator) -> None:
        self._aggregator = aggregator

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._aggregator.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._aggregator.on_assigned(assigned)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
