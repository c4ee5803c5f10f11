"""distcount's aggregator: Kafka partitions folded into time buckets, flushed exactly once."""

from distcount_aggregator._aggregator import MAX_RECORDS_PER_FETCH, Aggregator
from distcount_aggregator._deadletter import (
    NULL_HEADER,
    REASON_HEADER,
    REFUSED_HEADER,
    SOURCE_HEADER,
    TRUNCATED_HEADER,
    DeadLetters,
)
from distcount_aggregator._errors import AggregatorError, AssignmentFailed
from distcount_aggregator._fold import (
    PartitionState,
    bucket_start_ms,
    fold,
    next_tick_ms,
    unseen,
)
from distcount_aggregator._main import build_consumer, consumer_options, run, serve

__all__ = [
    "MAX_RECORDS_PER_FETCH",
    "NULL_HEADER",
    "REASON_HEADER",
    "REFUSED_HEADER",
    "SOURCE_HEADER",
    "TRUNCATED_HEADER",
    "Aggregator",
    "AggregatorError",
    "AssignmentFailed",
    "DeadLetters",
    "PartitionState",
    "bucket_start_ms",
    "build_consumer",
    "consumer_options",
    "fold",
    "next_tick_ms",
    "run",
    "serve",
    "unseen",
]
