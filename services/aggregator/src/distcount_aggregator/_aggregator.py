"""The consume-fold-flush loop: each assigned partition folded into time buckets and flushed to
PostgreSQL exactly once, with the partition's offset stored in the same transaction.

One record's way: `GuardedFetch` returns it (`_fetch.py`); `unseen` and `fold` add it to its
partition's buckets (`_fold.py`), or it goes to the dead-letter topic (`_deadletter.py`); when
the `FlushPolicy` says so, the `Checkpointer` writes the buckets and the next offset in one
transaction (`_checkpoint.py`). A partition that cannot be decoded is paused (`_stalls.py`).

One lock serialises folding, the start and the end of a flush, and rebalancing, because
aiokafka runs the rebalance listener in its own task. The flush on a tick writes while the loop
goes on folding (a `Flight`, see `_checkpoint.py`); at most one is under way, and it is landed
before another begins, before a revocation flushes what it must, and before the last flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from distcount_aggregator._checkpoint import Checkpointer, Flight, FlushPolicy, seek
from distcount_aggregator._deadletter import DeadLetters
from distcount_aggregator._errors import AggregatorError, AssignmentFailed
from distcount_aggregator._fetch import GuardedFetch, Records, Stalled
from distcount_aggregator._fold import PartitionState, fold, unseen
from distcount_aggregator._stalls import Stalls
from distcount_codec import RecordDecoder
from distcount_config import Settings
from distcount_core import describe
from distcount_metrics import AggregatorMetrics
from distcount_store import Database

log = logging.getLogger("distcount.aggregator")

# records folded between two looks at the event loop: heartbeats and flushes must not starve
MAX_RECORDS_PER_FETCH: Final = 5000
# how often the broker is asked where the partitions end, for the as_of (a request a time)
PROBE_INTERVAL_MS: Final = 500

# where partitions end, as the high watermark (see `build_end_probe` in _main.py)
EndOffsets = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]
_PROBE_TIMEOUT_S: Final = 2.0


class Aggregator:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        database: Database,
        dead_letters: DeadLetters,
        metrics: AggregatorMetrics | None = None,
        *,
        end_offsets: EndOffsets,
    ) -> None:
        self._settings = settings
        self._end_offsets = end_offsets
        self._metrics = metrics or AggregatorMetrics()
        self._consumer = consumer
        self._database = database
        self._dead_letters = dead_letters
        self._topic = settings.topic
        self._states: dict[int, PartitionState] = {}
        self._decoder = RecordDecoder()
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._fatal: BaseException | None = None
        self._paused = False  # every partition, at the memory bound while flushes fail
        self._generation = 0  # counts assignments
        self._next_probe_ms = 0
        self._policy: FlushPolicy | None = None  # made when the loop starts
        self._flight: Flight | None = None  # the flush under way
        self._fetcher = GuardedFetch(consumer, MAX_RECORDS_PER_FETCH)
        self._checkpointer = Checkpointer(
            settings.group_id,
            consumer,
            database,
            dead_letters,
            self._metrics,
            id_window_s=settings.idempotency_window_s,
            forget=self._decoder.known.clear,
        )
        self._stalls = Stalls(settings, consumer, database, self._metrics)
        self.listener = _Listener(self)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def live_entries(self) -> int:
        """Entries in memory: those folded, and those a flush under way still holds."""
        held = 0 if self._flight is None else self._flight.entries
        return held + sum(state.entries for state in self._states.values())

    def lag(self) -> dict[int, int]:
        """Per assigned partition, the records not folded yet, as of the last fetch."""
        lags = {}
        for partition, state in self._states.items():
            highwater = self._consumer.highwater(self._tp(partition))
            if highwater is not None and state.position is not None:
                lags[partition] = max(0, highwater - state.position)
        return lags

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until stop(), then flush what is folded; an `AggregatorError` if it cannot
        go on (the last flush is made all the same where it still can be)."""
        policy = self._policy = FlushPolicy(
            self._settings.flush_interval_ms, self._settings.max_live_entries, _now_ms()
        )
        self._raise_if_fatal()  # an assignment may have failed before the loop began
        try:
            while not self._stopping.is_set():
                generation = self._generation
                batches, stalled = await self._fetcher.fetch(
                    policy.wait_ms(_now_ms()), self._positions
                )
                async with self._lock:
                    self._raise_if_fatal()
                    if generation == self._generation:
                        await self._take(batches, stalled)
                    else:
                        await self._read_again(stalled)
                    await self._checkpoint(policy)
        except AggregatorError as exc:
            self._fatal = exc  # no last flush: what stopped the loop would stop it too
            raise
        finally:
            async with self._lock:
                if self._fatal is None:
                    await self._land()
                    await self._checkpointer.flush(self._states.values(), self._topic, "shutdown")
                elif self._flight is not None:
                    # what stopped the loop may stop this flush too: whatever it committed is
                    # stored with its offset, and read again from there next time otherwise
                    await asyncio.gather(self._flight.task, return_exceptions=True)
                    self._flight = None
            await self._checkpointer.close()
        self._raise_if_fatal()  # an assignment may have failed before the loop began

    async def _take(self, batches: Records, stalled: list[Stalled]) -> None:
        """Fold what was fetched, pause what stalled, and move past what the fetch skipped."""
        for tp, records in batches.items():
            state = self._states.get(tp.partition)
            if state is None:
                continue  # revoked meanwhile
            fresh = unseen(state, records)
            self._metrics.on_fetched(tp.partition, fresh)
            if fresh:
                self._stalls.passed(tp.partition, fresh[-1].offset)
            for record, reason in fold(state, fresh, self._settings.bucket_ms, self._decoder):
                await self._dead_letters.send(record, reason, self._topic)
                self._metrics.on_dead_letter()
        for stall in stalled:
            self._stalls.stalled(stall)
        await self._follow_positions()
        await self._probe_ends()
        # a partition whose flush is under way may have stored an offset its state does not
        # know yet: it would look moved by an operator
        flying = set() if self._flight is None else self._flight.partitions
        await self._stalls.save_and_retry(
            {p: state for p, state in self._states.items() if p not in flying}
        )

    async def _read_again(self, stalled: list[Stalled]) -> None:
        """A rebalance happened while fetching: what came may predate the seeks to the stored
        offsets, and a failed fetch may have moved a position past records nobody received.
        Drop it all and read every partition again from where it stands."""
        for partition, state in self._states.items():
            await seek(self._consumer, self._tp(partition), state.position)
        assigned = self._consumer.assignment()
        # a stall found meanwhile is found again, from the stored offset
        self._consumer.resume(*(tp for s in stalled if (tp := self._tp(s.partition)) in assigned))

    async def _follow_positions(self) -> None:
        """Move past what the consumer skipped without returning records: the markers that end
        transactions, aborted records. The consumer's position never passes a record it has not
        returned, so storing it loses nothing, and an idle partition shows no lag. A partition
        whose flush is under way waits for it to land: until then its stored offset is behind
        what the flush stores, and a position past it would look like something to flush."""
        flying = set() if self._flight is None else self._flight.partitions
        for partition, state in self._states.items():
            if partition in flying:
                continue
            position = await self._consumer.position(self._tp(partition))
            if state.position is None or position > state.position:
                # an empty partition gets a position too, so its lag can be reported
                state.position = position
                if position > (state.stored_offset or 0):
                    state.folded_until = position

    async def _probe_ends(self) -> None:
        """Every PROBE_INTERVAL_MS, ask the broker where each assigned partition ends: the
        as_of the flushes store comes from these answers (see `PartitionState`)."""
        now_ms = _now_ms()
        if not self._states or now_ms < self._next_probe_ms:
            return
        self._next_probe_ms = now_ms + PROBE_INTERVAL_MS
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                ends = await self._end_offsets([self._tp(p) for p in self._states])
        except (KafkaError, TimeoutError) as exc:  # the as_of waits for the next probe
            log.debug("cannot ask where the partitions end: %s", describe(exc))
            return
        for tp, end in ends.items():
            if (state := self._states.get(tp.partition)) is not None:
                state.probe(now_ms, end)

    async def _checkpoint(self, policy: FlushPolicy) -> None:
        """Land the flush under way once it is done; begin one when the policy says so (after
        the last one landed); pause fetching at the memory bound while flushes fail, and resume
        once one succeeds."""
        if self._flight is not None and self._flight.done():
            await self._land()
        reason = policy.due(_now_ms(), self.live_entries)
        if reason is not None:
            if self._flight is not None:  # a flush slower than the interval: this one waits
                await self._land()
            if not policy.backing_off(_now_ms()):
                self._flight = self._checkpointer.begin(self._states.values(), self._topic, reason)
        if policy.backing_off(_now_ms()) and policy.full(self.live_entries) and not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning(
                "%d live entries and PostgreSQL cannot take them: fetching paused",
                self.live_entries,
            )

    async def _land(self) -> None:
        """Wait for the flush under way, if any, and apply its outcome (with the lock held)."""
        flight, self._flight = self._flight, None
        if flight is None:
            return
        ok = await self._checkpointer.finish(flight)
        assert self._policy is not None  # a flight begins in the loop, after the policy
        self._policy.flushed(ok, _now_ms())
        if ok and self._paused:
            self._consumer.resume(*self._stalls.fetchable(self._consumer.assignment()))
            self._paused = False
            log.info("flush succeeded again: fetching resumed")

    def _raise_if_fatal(self) -> None:
        if isinstance(self._fatal, AggregatorError):
            raise self._fatal
        if self._fatal is not None:
            raise AssignmentFailed(str(self._fatal)) from self._fatal

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self._topic, partition)

    def _positions(self) -> dict[TopicPartition, int | None]:
        return {self._tp(partition): state.position for partition, state in self._states.items()}

    # -- rebalancing ----------------------------------------------------------------------------
    # aiokafka logs and swallows what a listener raises: a failure here must stop the loop.

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            try:
                await self._land()  # what it took is written, or given back to flush below
            except AggregatorError as exc:
                self._fail(exc, revoked)
                return
            states = [
                self._states.pop(tp.partition) for tp in revoked if tp.partition in self._states
            ]
            try:
                flushed = await self._checkpointer.flush(states, self._topic, "revocation")
            except AggregatorError as exc:
                self._fail(exc, revoked)
                return
            finally:
                for state in states:
                    self._dead_letters.forget(state.partition)
                self._stalls.forget(state.partition for state in states)
                self._metrics.on_dropped([state.partition for state in states])
            if not flushed:
                log.warning("revoked partitions could not be flushed; their new owner reads again")

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            self._generation += 1
            self._paused = False  # a new assignment starts unpaused
            try:
                stored = await self._database.read_offsets(
                    self._settings.group_id, self._topic, [tp.partition for tp in assigned]
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
                self._fail(exc, assigned)
                return
            log.info(
                "assigned partitions %s at stored offsets %s",
                sorted(tp.partition for tp in assigned),
                {p: stored.get(p) for p in sorted(tp.partition for tp in assigned)},
            )

    def _fail(self, exc: BaseException, partitions: set[TopicPartition]) -> None:
        self._fatal = exc
        self._consumer.pause(*(tp for tp in partitions if tp in self._consumer.assignment()))
        self._states.clear()
        self._stopping.set()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc] # aiokafka has no type hints
    def __init__(self, aggregator: Aggregator) -> None:
        self._aggregator = aggregator

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._aggregator.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._aggregator.on_assigned(assigned)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
