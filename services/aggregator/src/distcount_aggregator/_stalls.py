"""Partitions paused at a batch that cannot be decoded: said loudly, stored, and retried.

A stall is logged with its topic, partition and offset, stored in PostgreSQL (where readiness
checks, `distcount dev status` and `distcount stalls` read it) and counted in a gauge. The
partition stays paused at that offset, so nothing after it is counted or skipped, and is tried
again every `DISTCOUNT_STALL_RETRY_MS`: a fix that needs no restart (the batch was a passing
corruption, or an operator ran `distcount skip` past it) takes effect then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from distcount_aggregator._fetch import Stalled
from distcount_aggregator._fold import PartitionState
from distcount_config import Settings
from distcount_metrics import AggregatorMetrics
from distcount_store import Database, PartitionRef, StoreError

log = logging.getLogger("distcount.aggregator")


class Stalls:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        database: Database,
        metrics: AggregatorMetrics,
    ) -> None:
        self._group = settings.group_id
        self._topic = settings.topic
        self._consumer = consumer
        self._database = database
        self._stalled: dict[int, Stalled] = {}
        self._unsaved: dict[int, Stalled] = {}
        self._retry_s = settings.stall_retry_ms / 1000
        self._retry_at = 0.0
        metrics.watch_stalled(lambda: len(self._stalled))

    def __len__(self) -> int:
        return len(self._stalled)

    def stalled(self, stall: Stalled) -> None:
        before = self._stalled.get(stall.partition)
        self._stalled[stall.partition] = stall
        self._unsaved[stall.partition] = stall
        self._retry_at = time.monotonic() + self._retry_s
        if before is not None and before.offset == stall.offset:
            log.info(
                "partition %d of %s is still stopped at offset %d: %s",
                stall.partition,
                self._topic,
                stall.offset,
                stall.reason,
                extra=self._context(stall),
            )
            return
        log.error(
            "counting stopped: partition %d of %s at offset %d holds a record batch this "
            "aggregator cannot decode (%s). Records before it are counted; none from it on is "
            "counted or skipped until it decodes (retried every %.1f s) or an operator runs "
            "`distcount skip %d --to OFFSET`; see the README's Stalled partitions",
            stall.partition,
            self._topic,
            stall.offset,
            stall.reason,
            self._retry_s,
            stall.partition,
            extra=self._context(stall),
        )

    def _context(self, stall: Stalled) -> dict[str, object]:
        """The fields of a stall's log lines that an operator filters on."""
        return {
            "group": self._group,
            "topic": self._topic,
            "partition": stall.partition,
            "offset": stall.offset,
            "reason": stall.reason,
        }

    def passed(self, partition: int, last_offset: int) -> None:
        """Records up to `last_offset` of `partition` were folded: past a stall, it is over."""
        stall = self._stalled.get(partition)
        if stall is not None and last_offset >= stall.offset:
            del self._stalled[partition]
            self._unsaved.pop(partition, None)
            log.info(
                "partition %d of %s counts again past offset %d",
                partition,
                self._topic,
                stall.offset,
            )

    def fetchable(self, partitions: Iterable[TopicPartition]) -> list[TopicPartition]:
        """`partitions` without the stalled ones, which stay paused."""
        return [tp for tp in partitions if tp.partition not in self._stalled]

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked: whoever owns them next finds out for itself."""
        for partition in partitions:
            self._stalled.pop(partition, None)
            self._unsaved.pop(partition, None)

    async def save_and_retry(self, states: Mapping[int, PartitionState]) -> None:
        """Store stalls not stored yet; when due, resume the stalled partitions once."""
        if self._unsaved:
            await self._save()
        if self._stalled and time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + self._retry_s
            await self._retry(states)

    async def _save(self) -> None:
        try:
            for partition, stall in list(self._unsaved.items()):
                ref = PartitionRef(self._group, self._topic, partition)
                await self._database.record_stall(ref, stall.offset, stall.reason)
                del self._unsaved[partition]
        except StoreError as exc:  # kept, and stored with the next loop iteration
            log.debug("storing a stall failed, kept for a retry: %s", exc)

    async def _retry(self, states: Mapping[int, PartitionState]) -> None:
        partitions = [p for p in self._stalled if p in states]
        try:
            stored = await self._database.read_offsets(self._group, self._topic, partitions)
        except StoreError as exc:
            log.debug("cannot read the stalled partitions' offsets now: %s", exc)
            return
        for partition in partitions:
            state = states[partition]
            tp = TopicPartition(self._topic, partition)
            offset = stored.get(partition)
            if not state.dirty and offset is not None and offset != state.stored_offset:
                # an operator moved the offset (`distcount skip`): read on from there
                log.warning(
                    "partition %d's stored offset moved from %s to %d while it was stalled: "
                    "reading on from %d",
                    partition,
                    state.stored_offset,
                    offset,
                    offset,
                )
                state.reset(offset)
                self._consumer.seek(tp, offset)
                self.passed(partition, offset - 1)
            self._consumer.resume(tp)
