"""Fetching from Kafka so that a batch nobody can decode stops its partition, not the process.

aiokafka raises out of `getmany` when a fetched batch cannot be decoded (a compression codec it
lacks, a corrupt batch), and the records it had already drained from other partitions in that
call are lost: their positions moved past records nobody received. So after such an error every
partition is sought back to the next record the aggregator has not folded; each partition is
then fetched alone to find the one that fails; its records before the bad batch are taken one
at a time, which moves its position exactly to the start of that batch; and that partition is
paused there. Nothing is skipped: the partition waits at the offset it reports.

One failure is not the batch's: a header name that is not UTF-8, which aiokafka refuses to
decode (see `_lenient.py`). That batch is read with a lenient reader of its own instead, its
records returned like any others, and the consumer moved past it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from distcount_aggregator._errors import KafkaClientBroken
from distcount_aggregator._lenient import Unreadable, read_batch_at
from distcount_core import describe

log = logging.getLogger("distcount.aggregator")

Records = dict[TopicPartition, list[Any]]

# How long a lone partition is waited on while looking for the one that fails.
_PROBE_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class Stalled:
    """`partition` cannot be read past `offset`: the batch starting there raised `reason`."""

    partition: int
    offset: int
    reason: str
    at_ms: int


class GuardedFetch:
    """`getmany` for the aggregator: returns the records and the partitions that stalled."""

    def __init__(self, consumer: AIOKafkaConsumer, max_records: int) -> None:
        self._consumer = consumer
        self._max_records = max_records

    async def fetch(
        self, timeout_ms: int, positions: Callable[[], Mapping[TopicPartition, int | None]]
    ) -> tuple[Records, list[Stalled]]:
        """Records fetched within `timeout_ms`. `positions()` tells, per assigned partition, the
        offset of the next record to fold (None: the beginning); it is asked only after a
        failure, since a rebalance may change it while the fetch waits."""
        self._raise_if_client_broken()
        try:
            return (
                await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records),
                [],
            )
        except (ConsumerStoppedError, asyncio.CancelledError):
            raise
        except Exception as exc:  # whatever it is, records may have been lost: recover them
            log.warning(
                "fetching failed (%s); reading every partition again from its last folded record "
                "to find the one that fails",
                describe(exc),
            )
            now = positions()
            await self._rewind(now)
            return await self._probe(now)

    def _raise_if_client_broken(self) -> None:
        # aiokafka's client keeps its metadata fresh in a task of its own (aiokafka 0.14 names it
        # `_sync_task`), and nothing notices when that task ends: under uvloop a closed socket
        # raises RuntimeError where it expects OSError (aio-libs/aiokafka#1038). Fetching would
        # then wait on stale metadata for ever, counting nothing and saying nothing.
        task = self._consumer._client._sync_task
        if task is not None and task.done():
            error = None if task.cancelled() else task.exception()
            cause = "cancelled" if error is None else describe(error)
            raise KafkaClientBroken(
                f"the Kafka client's metadata task has ended ({cause}); the aggregator stops, "
                "having flushed what it folded, so that its supervisor starts it afresh"
            )

    async def _rewind(self, positions: Mapping[TopicPartition, int | None]) -> None:
        fresh = []
        for tp, offset in positions.items():
            if offset is None:
                fresh.append(tp)
            else:
                self._consumer.seek(tp, offset)
        if fresh:
            await self._consumer.seek_to_beginning(*fresh)

    async def _probe(
        self, positions: Mapping[TopicPartition, int | None]
    ) -> tuple[Records, list[Stalled]]:
        fetched: Records = {}
        stalled: list[Stalled] = []
        paused = self._consumer.paused()
        for tp in sorted(positions, key=lambda tp: tp.partition):
            if tp in paused or not self._may_have_records(tp, positions[tp]):
                continue
            try:
                batch = await self._consumer.getmany(
                    tp, timeout_ms=_PROBE_TIMEOUT_MS, max_records=self._max_records
                )
            except (ConsumerStoppedError, asyncio.CancelledError):
                raise
            except Exception:  # the partition that fails: read up to the bad batch
                records, stall = await self._isolate(tp)
                if records:
                    fetched[tp] = records
                if stall is not None:
                    stalled.append(stall)
                continue
            fetched.update(batch)
        return fetched, stalled

    def _may_have_records(self, tp: TopicPartition, position: int | None) -> bool:
        highwater = self._consumer.highwater(tp)
        return highwater is None or position is None or position < highwater

    async def _isolate(self, tp: TopicPartition) -> tuple[list[Any], Stalled | None]:
        """Take `tp`'s records one at a time up to the batch that fails, and pause `tp` there.
        Stops after a fetch's worth of records, or when no record comes in time (no stall
        yet: the next fetch tells more)."""
        records: list[Any] = []
        while len(records) < self._max_records:
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT_MS / 1000):
                    records.append(await self._consumer.getone(tp))
            except TimeoutError:
                return records, None
            except (ConsumerStoppedError, asyncio.CancelledError):
                raise
            except Exception as exc:
                offset = await self._consumer.position(tp)
                if isinstance(exc, UnicodeDecodeError):
                    read = await self._read_leniently(tp, offset, exc)
                    if read is not None:
                        return records + read, None
                self._consumer.pause(tp)
                return records, Stalled(tp.partition, offset, describe(exc), _now_ms())
        return records, None

    async def _read_leniently(
        self, tp: TopicPartition, offset: int, error: UnicodeDecodeError
    ) -> list[Any] | None:
        """The records from `offset` on of the batch aiokafka could not decode for a header's
        name, the consumer moved past that batch; None (the partition stalls as for any batch
        that cannot be read) if the lenient reader cannot read it either."""
        try:
            read = await read_batch_at(self._consumer, tp, offset, _PROBE_TIMEOUT_MS)
        except (Unreadable, KafkaError, OSError) as exc:
            log.warning(
                "partition %d at offset %d: aiokafka cannot decode a header (%s), nor can the "
                "lenient reader: %s",
                tp.partition,
                offset,
                error,
                describe(exc),
            )
            return None
        if read is None:
            return None
        records, after = read
        log.warning(
            "partition %d: the record batch at offset %d has a header name that is not UTF-8; "
            "read it leniently (%d records from %d) and moved on to %d",
            tp.partition,
            offset,
            len(records),
            offset,
            after,
            extra={"partition": tp.partition, "offset": offset},
        )
        self._consumer.seek(tp, after)
        return list(records)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
