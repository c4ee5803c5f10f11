"""The hooks the services call when something happens. Each service gets one object; its base
class records nothing (metrics off), its recording subclass keeps observations for the reporter.

Domain code says what happened (`on_request(route, status, duration_s)`); which metric that is,
and whether this one is sampled, is decided here.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

from distcount_metrics import _catalog as m
from distcount_metrics._recorder import Recorder

# record timestamps kept per partition between two flushes, for the end-to-end delay
_MAX_PENDING_DELAYS: Final = 10_000

ReportingContext = Callable[[], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def _not_reporting() -> AsyncIterator[None]:
    yield


class IngressMetrics:
    """The ingress's hooks; this base class ignores every call (DISTCOUNT_METRICS=off)."""

    # False: callers may skip the work of measuring altogether
    recording = False

    def reporting(self) -> AbstractAsyncContextManager[None]:
        """Report every tick while the context runs, and once more when it ends."""
        return _not_reporting()

    def on_request(self, route: str, status: int, duration_s: float | None) -> None:
        """A request to `route` (a route's name, not its path) was answered `status`, after
        `duration_s` (None: not timed, such as a request no route matched)."""

    def on_produced(self, path: str, duration_s: float) -> None:
        """Kafka acknowledged a request's records (`path`: "single" or "batch")."""

    def on_unavailable(self, cause: str) -> None:
        """A request was answered 503 because `cause` ("kafka", "overloaded", "postgres")."""

    def watch_inflight_sends(self, read: Callable[[], int]) -> None:
        """`read()` tells how many requests wait for Kafka, whenever a tick asks."""


class AggregatorMetrics:
    """The aggregator's hooks; this base class ignores every call (DISTCOUNT_METRICS=off)."""

    recording = False

    def reporting(self) -> AbstractAsyncContextManager[None]:
        """Report every tick while the context runs, and once more when it ends."""
        return _not_reporting()

    def on_fetched(self, partition: int, records: Sequence[Any]) -> None:
        """`records` (consumer records, with `.timestamp` in ms) arrived for `partition`."""

    def on_dead_letter(self) -> None:
        """A record that breaks the contract was sent to the dead-letter topic."""

    def on_flush(
        self, partition: int, reason: str, outcome: str, rows: int, duration_s: float
    ) -> None:
        """A partition's flush ended: `outcome` is "committed", "fenced" or "failed"."""

    def on_dropped(self, partitions: Collection[int]) -> None:
        """What was folded for `partitions` was dropped (revoked, or fenced)."""

    def watch_live_entries(self, read: Callable[[], int]) -> None:
        """`read()` tells how many (bucket, key) entries wait for a flush."""

    def watch_lag(self, read: Callable[[], Mapping[int, int]]) -> None:
        """`read()` maps each assigned partition to the records not folded yet."""


class RecordingIngressMetrics(IngressMetrics):
    recording = True

    def __init__(self, recorder: Recorder, reporting: ReportingContext) -> None:
        self._recorder = recorder
        self._reporting = reporting
        self._rate = recorder.sample_rate

    def reporting(self) -> AbstractAsyncContextManager[None]:
        return self._reporting()

    def on_request(self, route: str, status: int, duration_s: float | None) -> None:
        self._recorder.count(m.REQUESTS, (route, status))
        if duration_s is not None and random.random() < self._rate:
            self._recorder.time(m.REQUEST_DURATION, (route,), duration_s * 1000)

    def on_produced(self, path: str, duration_s: float) -> None:
        if random.random() < self._rate:
            self._recorder.time(m.PRODUCE_DURATION, (path,), duration_s * 1000)

    def on_unavailable(self, cause: str) -> None:
        self._recorder.count(m.UNAVAILABLE, (cause,))

    def watch_inflight_sends(self, read: Callable[[], int]) -> None:
        self._recorder.watch(m.INFLIGHT_SENDS, lambda: {(): read()})


class RecordingAggregatorMetrics(AggregatorMetrics):
    recording = True

    def __init__(self, recorder: Recorder, reporting: ReportingContext) -> None:
        self._recorder = recorder
        self._reporting = reporting
        # one record in `_every` is kept for the delay: exactly, across batches
        self._every = round(1 / recorder.sample_rate)
        self._phase = 0
        self._pending: dict[int, list[int]] = {}
        self._failed: set[int] = set()

    def reporting(self) -> AbstractAsyncContextManager[None]:
        return self._reporting()

    def on_fetched(self, partition: int, records: Sequence[Any]) -> None:
        self._recorder.count(m.RECORDS_IN, (), len(records))
        phase = self._phase
        self._phase = (phase - len(records)) % self._every
        pending = self._pending.setdefault(partition, [])
        if len(pending) < _MAX_PENDING_DELAYS:
            pending.extend(
                t for r in records[phase :: self._every] if (t := r.timestamp) is not None
            )

    def on_dead_letter(self) -> None:
        self._recorder.count(m.DEAD_LETTERS)

    def on_flush(
        self, partition: int, reason: str, outcome: str, rows: int, duration_s: float
    ) -> None:
        recorder = self._recorder
        recorder.time(m.FLUSH_DURATION, (reason,), duration_s * 1000)
        if partition in self._failed:
            recorder.count(m.FLUSH_RETRIES)
        if outcome == "failed":
            self._failed.add(partition)
            recorder.count(m.FLUSH_FAILURES)
            return
        self._failed.discard(partition)
        pending = self._pending.pop(partition, [])
        if outcome == "fenced":
            recorder.count(m.FLUSH_FENCED)
            return
        recorder.time(m.FLUSH_ROWS, (), rows)
        now_ms = time.time_ns() // 1_000_000
        for timestamp_ms in pending:
            # a producer's clock ahead of ours would make it negative
            recorder.time(m.DELAY, (), max(0, now_ms - timestamp_ms))

    def on_dropped(self, partitions: Collection[int]) -> None:
        for partition in partitions:
            self._pending.pop(partition, None)
            self._failed.discard(partition)

    def watch_live_entries(self, read: Callable[[], int]) -> None:
        self._recorder.watch(m.LIVE_ENTRIES, lambda: {(): read()})

    def watch_lag(self, read: Callable[[], Mapping[int, int]]) -> None:
        self._recorder.watch(
            m.CONSUMER_LAG, lambda: {(partition,): lag for partition, lag in read().items()}
        )


__all__ = [
    "AggregatorMetrics",
    "IngressMetrics",
    "RecordingAggregatorMetrics",
    "RecordingIngressMetrics",
]
