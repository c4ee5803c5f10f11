"""Every metric distcount emits, in one table: the README's catalog and the dashboard are checked
against it, and the hooks refer to its entries, so no other code spells a metric's name."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

PREFIX: Final = "distcount"


class Kind(StrEnum):
    COUNTER = "counter"  # StatsD `c`, summed in the process and sent once per tick
    GAUGE = "gauge"  # StatsD `g`, read when the tick comes
    TIMER = "timer"  # StatsD `ms`, one line per observation (sampled where per event)


# eq=False: a metric is its one catalog entry, hashed by identity, which keeps the dict updates
# of the hot paths cheap (a field-wise hash runs the enum's Python-level __hash__ every time)
@dataclass(frozen=True, eq=False)
class Metric:
    name: str  # after the prefix
    kind: Kind
    tags: tuple[str, ...]
    unit: str
    meaning: str
    # observed once per request or record, hence sampled at DISTCOUNT_METRICS_SAMPLE_RATE
    per_event: bool = False

    @property
    def full_name(self) -> str:
        return f"{PREFIX}.{self.name}"


# -- ingress ------------------------------------------------------------------------------------
REQUESTS: Final = Metric(
    "ingress.requests",
    Kind.COUNTER,
    ("route", "status"),
    "requests",
    "HTTP requests answered; route: increment, increments, counter, history, listing, top, "
    "writes, page, live, ready, openapi, or unmatched (404 and 405 from the router)",
)
REQUEST_DURATION: Final = Metric(
    "ingress.request.duration",
    Kind.TIMER,
    ("route",),
    "ms",
    "time from routing a request to its answer (unmatched requests are not timed)",
    per_event=True,
)
PRODUCE_DURATION: Final = Metric(
    "ingress.produce.duration",
    Kind.TIMER,
    ("path",),
    "ms",
    "time Kafka took to acknowledge a request's records (path: single or batch)",
    per_event=True,
)
INFLIGHT_SENDS: Final = Metric(
    "ingress.inflight_sends",
    Kind.GAUGE,
    (),
    "requests",
    "requests waiting for Kafka's acknowledgement",
)
UNAVAILABLE: Final = Metric(
    "ingress.unavailable",
    Kind.COUNTER,
    ("cause",),
    "requests",
    "503 answers, by cause: kafka, overloaded (too many in flight) or postgres",
)

# -- aggregator ---------------------------------------------------------------------------------
RECORDS_IN: Final = Metric(
    "aggregator.records_in",
    Kind.COUNTER,
    (),
    "records",
    "Kafka records folded or dead-lettered, each once (records fetched again after a seek are "
    "not counted again)",
)
DEAD_LETTERS: Final = Metric(
    "aggregator.dead_letters",
    Kind.COUNTER,
    (),
    "records",
    "records that break the contract, sent to the dead-letter topic",
)
REPEATED: Final = Metric(
    "aggregator.repeated",
    Kind.COUNTER,
    ("body",),
    "records",
    "records whose idempotency id was counted before within the window, not counted again "
    "(body: `same`, a retry; `different`, the id reused for another increment)",
)
LIVE_ENTRIES: Final = Metric(
    "aggregator.live_entries",
    Kind.GAUGE,
    (),
    "entries",
    "(bucket, key) deltas held in memory, waiting for a flush",
)
STALLED_PARTITIONS: Final = Metric(
    "aggregator.stalled_partitions",
    Kind.GAUGE,
    (),
    "partitions",
    "partitions whose counting stopped at a record batch that cannot be decoded (see the "
    "README's Stalled partitions); anything above 0 needs an operator",
)
FLUSH_DURATION: Final = Metric(
    "aggregator.flush.duration",
    Kind.TIMER,
    ("reason",),
    "ms",
    "one partition's flush transaction, committed or not (reason: tick, memory, revocation, "
    "shutdown)",
)
FLUSH_ROWS: Final = Metric(
    "aggregator.flush.rows",
    Kind.TIMER,
    (),
    "rows",
    "event rows written by one committed partition flush (a distribution, sent as a timer)",
)
FLUSH_FAILURES: Final = Metric(
    "aggregator.flush.failures",
    Kind.COUNTER,
    (),
    "flushes",
    "partition flushes that failed and were kept for a retry",
)
FLUSH_RETRIES: Final = Metric(
    "aggregator.flush.retries",
    Kind.COUNTER,
    (),
    "flushes",
    "partition flushes attempted again after a failure",
)
FLUSH_FENCED: Final = Metric(
    "aggregator.flush.fenced",
    Kind.COUNTER,
    (),
    "flushes",
    "partition flushes refused because another aggregator had flushed the partition",
)
CONSUMER_LAG: Final = Metric(
    "aggregator.consumer_lag",
    Kind.GAUGE,
    ("partition",),
    "records",
    "records in the partition not folded yet (high watermark minus position)",
)
DELAY: Final = Metric(
    "aggregator.delay",
    Kind.TIMER,
    (),
    "ms",
    "end-to-end delay: flush commit time minus the record's timestamp",
    per_event=True,
)

# -- both services ------------------------------------------------------------------------------
MEMORY_RSS: Final = Metric(
    "process.memory_rss",
    Kind.GAUGE,
    ("component",),
    "bytes",
    "resident memory of the process (component: ingress or aggregator)",
)
LOOP_LAG: Final = Metric(
    "process.loop_lag",
    Kind.GAUGE,
    ("component",),
    "ms",
    "worst event-loop delay seen since the last tick (how late a timer fired)",
)

CATALOG: Final[tuple[Metric, ...]] = (
    REQUESTS,
    REQUEST_DURATION,
    PRODUCE_DURATION,
    INFLIGHT_SENDS,
    UNAVAILABLE,
    RECORDS_IN,
    DEAD_LETTERS,
    REPEATED,
    LIVE_ENTRIES,
    STALLED_PARTITIONS,
    FLUSH_DURATION,
    FLUSH_ROWS,
    FLUSH_FAILURES,
    FLUSH_RETRIES,
    FLUSH_FENCED,
    CONSUMER_LAG,
    DELAY,
    MEMORY_RSS,
    LOOP_LAG,
)
