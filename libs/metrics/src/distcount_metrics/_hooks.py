"""The hooks the services call when something happens. Each service gets one object; its base
class records nothing (metrics off), its recording subclass keeps observations for the reporter.

Domain code says what happened (`on_request(route, status, duration_s)`); which metric that is,
and whether this one is sampled, is decided here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from random import random
from time import perf_counter
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

    def reporting(self) -> AbstractAsyncContextManager[None]:
        """Report every tick while the context runs, and once more when it ends."""
        return _not_reporting()

    def start_timer(self) -> float | None:
        """`time.perf_counter()` if the request or send about to start is one to time (drawn
        at the sample rate), else None; what it measures goes to `on_request` or `on_produced`.
        Drawing first spares the clock reads of the events not timed."""
        return None

    def on_request(self, route: str, status: int, duration_s: float | None) -> None:
        """A request to `route` (a route's name, not its path) was answered `status`, after
        `duration_s` (from a `start_timer()` that was not None; else None: not timed)."""

    def on_produced(self, path: str, duration_s: float | None) -> None:
        """Kafka acknowledged a request's records (`path`: "single" or "batch") after
        `duration_s` (from a `start_timer()` that was not None; else None)."""

    def on_unavailable(self, cause: str) -> None:
        """A request was answered 503 because `cause` ("kafka", "overloaded", "postgres")."""

    def watch_inflight_sends(self, read: Callable[[], int]) -> None:
        """`read()` tells how many requests wait for Kafka, whenever a tick asks."""


class AggregatorMetrics:
    """The aggregator's hooks; this base class ignores every call (DISTCOUNT_METRICS=off)."""

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

    def on_repeated(self, same: int, different: int) -> None:
        """A committed flush left out records whose id was counted before: `same` retries of
        the increment counted, `different` other increments sent under a used id."""

    def on_dropped(self, partitions: Collection[int]) -> None:
        """What was folded for `partitions` was dropped (revoked, or fenced)."""

    def watch_live_entries(self, read: Callable[[], int]) -> None:
        """`read()` tells how many (bucket, key) entries wait for a flush."""

    def watch_lag(self, read: Callable[[], Mapping[int, int]]) -> None:
        """`read()` maps each assigned partition to the records not folded yet."""

    def watch_stalled(self, read: Callable[[], int]) -> None:
        """`read()` tells how many partitions stopped at a batch that cannot be decoded."""


class RecordingIngressMetrics(IngressMetrics):
    def __init__(self, recorder: Recorder, reporting: ReportingContext) -> None:
        self._recorder = recorder
        self._reporting = reporting
        self._rate = recorder.sample_rate
        # What every request touches is kept here, in plain dicts keyed by plain values (no key
        # to build per request), and handed to the recorder when a tick collects: route ->
        # status -> answers, and per route (or path) the durations drawn, in ms.
        self._requests: dict[str, dict[int, int]] = {}
        self._durations: dict[str, list[float]] = {}
        self._produced: dict[str, list[float]] = {}
        recorder.before_collect(self._hand_over)

    def reporting(self) -> AbstractAsyncContextManager[None]:
        return self._reporting()

    def start_timer(self) -> float | None:
        return perf_counter() if random() < self._rate else None

    def on_request(self, route: str, status: int, duration_s: float | None) -> None:
        answers = self._requests.get(route)
        if answers is None:
            answers = self._requests[route] = {}
        answers[status] = answers.get(status, 0) + 1
        if duration_s is not None:
            durations = self._durations.get(route)
            if durations is None:
                durations = self._durations[route] = []
            durations.append(duration_s * 1000)

    def on_produced(self, path: str, duration_s: float | None) -> None:
        if duration_s is not None:
            durations = self._produced.get(path)
            if durations is None:
                durations = self._produced[path] = []
            durations.append(duration_s * 1000)

    def on_unavailable(self, cause: str) -> None:
        self._recorder.count(m.UNAVAILABLE, (cause,))

    def watch_inflight_sends(self, read: Callable[[], int]) -> None:
        self._recorder.watch(m.INFLIGHT_SENDS, lambda: {(): read()})

    def _hand_over(self) -> None:
        requests, self._requests = self._requests, {}
        for route, answers in requests.items():
            for status, n in answers.items():
                self._recorder.count(m.REQUESTS, (route, status), n)
        for metric, lists in (
            (m.REQUEST_DURATION, self._durations),
            (m.PRODUCE_DURATION, self._produced),
        ):
            for name, values in lists.items():
                self._recorder.time_all(metric, (name,), values, self._rate)
        self._durations, self._produced = {}, {}


class RecordingAggregatorMetrics(AggregatorMetrics):
    def __init__(self, recorder: Recorder, reporting: ReportingContext) -> None:
        self._recorder = recorder
        self._reporting = reporting
        self._rate = recorder.sample_rate
        # per partition, (timestamp ms, sample rate) of the records drawn for the delay
        self._pending: dict[int, list[tuple[int, float]]] = {}
        self._failed: set[int] = set()

    def reporting(self) -> AbstractAsyncContextManager[None]:
        return self._reporting()

    def on_fetched(self, partition: int, records: Sequence[Any]) -> None:
        n = len(records)
        if not n:
            return
        self._recorder.count(m.RECORDS_IN, (), n)
        # At most one record of a fetch is drawn for the delay, so its cost does not grow with
        # the records: each is drawn with probability `rate`, or 1/n when a fetch holds more
        # than 1/rate records, and its line says which.
        expected = n * self._rate
        if expected >= 1:
            rate = 1 / n
        elif random() < expected:
            rate = self._rate
        else:
            return
        timestamp = records[int(random() * n)].timestamp
        pending = self._pending.setdefault(partition, [])
        if timestamp is not None and len(pending) < _MAX_PENDING_DELAYS:
            pending.append((timestamp, rate))

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
        for timestamp_ms, rate in pending:
            # a producer's clock ahead of ours would make it negative
            recorder.time(m.DELAY, (), max(0, now_ms - timestamp_ms), rate)

    def on_repeated(self, same: int, different: int) -> None:
        if same:
            self._recorder.count(m.REPEATED, ("same",), same)
        if different:
            self._recorder.count(m.REPEATED, ("different",), different)

    def on_dropped(self, partitions: Collection[int]) -> None:
        for partition in partitions:
            self._pending.pop(partition, None)
            self._failed.discard(partition)

    def watch_live_entries(self, read: Callable[[], int]) -> None:
        self._recorder.watch(m.LIVE_ENTRIES, lambda: {(): read()})

    def watch_stalled(self, read: Callable[[], int]) -> None:
        self._recorder.watch(m.STALLED_PARTITIONS, lambda: {(): read()})

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
