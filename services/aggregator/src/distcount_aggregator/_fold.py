"""Pure folding logic: time buckets and a partition's in-memory state, with no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from distcount_codec import InvalidRecord, RecordDecoder

# 9999-12-31T23:59:59.999Z; PostgreSQL timestamps end not long after
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999


def bucket_start_ms(timestamp_ms: int, bucket_ms: int) -> int:
    """The start of the bucket holding `timestamp_ms` (buckets are aligned to the epoch)."""
    return timestamp_ms - timestamp_ms % bucket_ms


def next_tick_ms(now_ms: int, interval_ms: int) -> int:
    """The first interval boundary strictly after `now_ms`."""
    return (now_ms // interval_ms + 1) * interval_ms


class PartitionState:
    """What one assigned partition has folded since its last committed flush.

    `stored_offset` is the offset PostgreSQL holds for the partition (None: no row yet): the flush
    checks it is still there before writing. `position` is the offset of the next record to fold,
    so records at earlier offsets (already counted) are never folded twice.
    """

    __slots__ = ("deltas", "folded_until", "partition", "position", "stored_offset")

    def __init__(self, partition: int, stored_offset: int | None) -> None:
        self.partition = partition
        self.stored_offset = stored_offset
        self.position = stored_offset
        # offset after the last record folded or dead-lettered; None: nothing to flush
        self.folded_until: int | None = None
        # bucket start (ms) -> key -> delta
        self.deltas: dict[int, dict[str, int]] = {}

    @property
    def entries(self) -> int:
        return sum(len(keys) for keys in self.deltas.values())

    @property
    def dirty(self) -> bool:
        return self.folded_until is not None

    def committed(self) -> None:
        """The flush of everything folded so far committed: start afresh from there."""
        assert self.folded_until is not None
        self.stored_offset = self.folded_until
        self.folded_until = None
        self.deltas = {}

    def reset(self, stored_offset: int | None) -> None:
        """Drop what was folded: another process flushed first, so read again from the store."""
        self.stored_offset = stored_offset
        self.position = stored_offset
        self.folded_until = None
        self.deltas = {}


def unseen(state: PartitionState, records: Sequence[Any]) -> Sequence[Any]:
    """`records` without those before the state's position: a fetch from before a seek (after
    a rebalance or a fenced flush) returns records that were counted already."""
    position = state.position
    if position is not None and records and records[0].offset < position:
        return [r for r in records if r.offset >= position]
    return records


def fold(
    state: PartitionState, records: Sequence[Any], bucket_ms: int, decoder: RecordDecoder
) -> list[tuple[Any, str]]:
    """Add `records` (consumer records of the state's partition, in offset order, all `unseen`)
    to the state's buckets; returns the records that break the contract, each with the reason.

    This runs once per record: a value decoded before costs one lookup in the decoder's memory
    (see `RecordDecoder`).
    """
    if not records:
        return []
    rejected: list[tuple[Any, str]] = []
    known = decoder.known.get
    decode = decoder.decode
    buckets = state.deltas
    low = high = 0
    current: dict[str, int] = {}
    for record in records:
        increment = known(record.value)
        if increment is None:
            try:
                increment = decode(record.value)
            except InvalidRecord as exc:
                rejected.append((record, str(exc)))
                continue
        key, value = increment
        timestamp = record.timestamp
        if timestamp is None or not low <= timestamp < high:
            if timestamp is None or timestamp < 0:
                rejected.append((record, "record has no timestamp"))
                continue
            if timestamp > MAX_TIMESTAMP_MS:
                rejected.append((record, f"timestamp {timestamp} is past the year 9999"))
                continue
            low = timestamp - timestamp % bucket_ms
            high = low + bucket_ms
            current = buckets.get(low) or buckets.setdefault(low, {})
        current[key] = current.get(key, 0) + value
    state.position = state.folded_until = records[-1].offset + 1
    return rejected
