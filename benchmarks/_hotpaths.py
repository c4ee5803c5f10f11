"""The two hot paths the metrics benchmarks drive in one process, with no Kafka, no PostgreSQL
and no server: what metrics_overhead.py times and metrics_instructions.py counts.

- ingress: the app of `distcount_ingress.create_app`, called as an ASGI app with
  `POST /increment` requests; its publisher acknowledges every record at once.
- fold: real aiokafka consumer records in fetches split by partition, as getmany hands them
  over; per partition's share `metrics.on_fetched` then `distcount_aggregator.fold`, and every
  few fetches what a committed flush does around its transaction (`metrics.on_flush`, then
  `PartitionState.committed()`).

Both give the event loop a turn after each request or fetch, as a server or the aggregator's
getmany would, so the metrics reporter's ticks run while the work goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from distcount_aggregator import MAX_RECORDS_PER_FETCH, PartitionState, fold
from distcount_codec import Increment, RecordDecoder, encode_record
from distcount_config import Settings
from distcount_ingress import create_app
from distcount_metrics import aggregator_metrics, ingress_metrics
from distcount_store import Flushed, HistoryQuery

# the duration every simulated flush reports (no PostgreSQL here)
FLUSH_DURATION_S = 0.01

Receive = Callable[[], Awaitable[dict[str, Any]]]


class AckingPublisher:
    """The ingress's Publisher: every record is acknowledged at once."""

    inflight_sends = 0

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, key: bytes, value: bytes) -> tuple[int, int]:
        self.published += 1
        return 0, self.published

    async def publish_batch(self, records: Sequence[tuple[bytes, bytes]]) -> dict[int, int]:
        self.published += len(records)
        return {0: self.published}

    async def partition_count(self) -> int | None:
        return 1

    async def check(self, timeout_s: float) -> None:
        pass


class NoTotals:
    """The ingress's CounterReader; POST /increment never reads."""

    async def read(self, key: str) -> int | None:
        return None

    async def check(self, timeout_s: float) -> None:
        pass

    async def stalls(self, timeout_s: float) -> list[str]:
        return []

    async def flushed(self, timeout_s: float) -> Flushed:
        return Flushed({}, {})

    async def history(self, query: HistoryQuery, timeout_s: float) -> dict[int, int]:
        return {}

    async def listing(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
        return []

    async def top(self, since: datetime, until: datetime, limit: int) -> list[tuple[str, int]]:
        return []


def _receiver(message: dict[str, Any]) -> Receive:
    async def receive() -> dict[str, Any]:
        return message

    return receive


@dataclass
class Requests:
    """`POST /increment` requests `{"key": "c<i>", "value": 1}`, one scope (copied for each
    request) and one receive per key."""

    scopes: list[dict[str, Any]]
    receives: list[Receive]

    @classmethod
    def build(cls, keys: int) -> Requests:
        scopes: list[dict[str, Any]] = []
        receives: list[Receive] = []
        for i in range(keys):
            body = orjson.dumps({"key": f"c{i}", "value": 1})
            headers = [(b"host", b"127.0.0.1:3333"), (b"content-type", b"application/json")]
            scopes.append(
                {
                    "type": "http",
                    "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "http_version": "1.1",
                    "method": "POST",
                    "scheme": "http",
                    "path": "/increment",
                    "raw_path": b"/increment",
                    "root_path": "",
                    "query_string": b"",
                    "headers": [*headers, (b"content-length", str(len(body)).encode())],
                    "client": ("127.0.0.1", 40000),
                    "server": ("127.0.0.1", 3333),
                }
            )
            receives.append(_receiver({"type": "http.request", "body": body, "more_body": False}))
        return cls(scopes, receives)


class IngressPath:
    """The ingress's app and its metrics hooks, built from `settings` as the service builds
    them; `run` sends requests by `concurrency` coroutines, each awaited to its answer."""

    def __init__(self, settings: Settings, requests: Requests, concurrency: int) -> None:
        self.metrics = ingress_metrics(settings.metrics)
        publisher = self.publisher = AckingPublisher()
        self.metrics.watch_inflight_sends(lambda: publisher.inflight_sends)
        self.app = create_app(settings, publisher, NoTotals(), metrics=self.metrics)
        self.requests = requests
        self.concurrency = concurrency
        self.statuses: dict[int, int] = {}

    async def run(self, numbers: range) -> None:
        app, statuses = self.app, self.statuses
        scopes, receives = self.requests.scopes, self.requests.receives
        keys = len(scopes)

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                statuses[status] = statuses.get(status, 0) + 1

        async def worker(share: range) -> None:
            for i in share:
                await app(dict(scopes[i % keys]), receives[i % keys], send)
                await asyncio.sleep(0)  # the loop gets a turn: timers, the reporter

        step = self.concurrency
        await asyncio.gather(*(worker(numbers[w::step]) for w in range(min(step, len(numbers)))))

    def correct(self, total: int) -> bool:
        return self.statuses == {202: total} and self.publisher.published == total


Fetch = list[tuple[int, list[ConsumerRecord[bytes, bytes]]]]


@dataclass
class Records:
    """Fetches of MAX_RECORDS_PER_FETCH records, each split by partition: (partition, its
    records), as the aggregator's getmany hands them over."""

    fetches: list[Fetch]
    records: int
    partitions: int
    ends: dict[int, int]  # partition -> offset after its last record

    @classmethod
    def build(cls, records: int, keys: int, partitions: int, spread_ms: int) -> Records:
        """Record i: counter key k<i mod keys>, its value `encode_record`'s, in the partition
        its key falls in (each key in one partition, as Kafka's partitioner does), offsets
        counting up per partition, timestamps spread evenly over `spread_ms` ending now."""
        encoded = [encode_record(Increment(f"k{k}", 1)) for k in range(keys)]
        base_ms = int(time.time() * 1000) - spread_ms
        offsets = dict.fromkeys(range(partitions), 0)
        fetches: list[Fetch] = []
        for start in range(0, records, MAX_RECORDS_PER_FETCH):
            by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
            for i in range(start, min(records, start + MAX_RECORDS_PER_FETCH)):
                key, value = encoded[i % keys]
                partition = (i % keys) % partitions
                offset = offsets[partition]
                offsets[partition] = offset + 1
                timestamp = base_ms + (i * spread_ms) // records
                by_partition.setdefault(partition, []).append(
                    ConsumerRecord(
                        *("distcount.increments", partition, offset, timestamp, 0, key, value),
                        *(None, len(key), len(value), []),
                    )
                )
            fetches.append(sorted(by_partition.items()))
        return cls(fetches, records, partitions, offsets)


class FoldPath:
    """The aggregator's per-fetch work and its metrics hooks, on fresh partition states and a
    fresh decoder (as a process starts); a flush every `flush_every` fetches and at the end."""

    def __init__(self, settings: Settings, records: Records, flush_every: int) -> None:
        self.metrics = aggregator_metrics(settings.metrics)
        self.bucket_ms = settings.bucket_ms
        self.records = records
        self.flush_every = flush_every
        states = self.states = {p: PartitionState(p, None) for p in range(records.partitions)}
        self.decoder = RecordDecoder()
        ends = records.ends
        self.metrics.watch_live_entries(lambda: sum(state.entries for state in states.values()))
        self.metrics.watch_lag(
            lambda: {p: ends[p] - (s.position or 0) for p, s in states.items() if s.position}
        )
        self.folded = self.flushes = self.rejected = 0

    def flush(self) -> None:
        """What the aggregator's flush does around its PostgreSQL transaction, on success;
        the folded deltas are added up, for the check."""
        for state in self.states.values():
            if state.dirty:
                self.folded += sum(sum(keys.values()) for keys in state.deltas.values())
                self.metrics.on_flush(
                    state.partition, "tick", "committed", state.entries, FLUSH_DURATION_S
                )
                state.committed()
                self.flushes += 1

    async def run(self, numbers: range) -> None:
        metrics, states, decoder = self.metrics, self.states, self.decoder
        bucket_ms, flush_every, fetches = self.bucket_ms, self.flush_every, self.records.fetches
        for n in numbers:
            for partition, records in fetches[n]:
                metrics.on_fetched(partition, records)
                self.rejected += len(fold(states[partition], records, bucket_ms, decoder))
            if (n + 1) % flush_every == 0:
                self.flush()
            await asyncio.sleep(0)  # the next getmany: the loop gets a turn
        if numbers.stop == len(fetches):
            self.flush()

    def correct(self) -> bool:
        """Every record folded, none rejected: the deltas add up to the records (all 1s)."""
        return self.folded == self.records.records and self.rejected == 0
