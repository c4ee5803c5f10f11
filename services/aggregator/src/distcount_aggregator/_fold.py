"""Pure folding logic: time buckets and a partition's in-memory state, with no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distcount_aggregator._deadletter import PendingDeadLetter


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

    __slots__ = ("dead_letters", "deltas", "folded_until", "partition", "position", "stored_offset")

    def __init__(self, partition: int, stored_offset: int | None) -> None:
        self.partition = partition
        self.stored_offset = stored_offset
        self.position = stored_offset
        # offset after the last record folded or dead-lettered; None: nothing to flush
        self.folded_until: int | None = None
        self.deltas: dict[tuple[int, str], int] = {}
        self.dead_letters: list[PendingDeadLetter] = []

    @property
    def dirty(self) -> bool:
        return self.folded_until is not None

    def committed(self) -> None:
        """The flush of everything folded so far committed: start afresh from there."""
        assert self.folded_until is not None
        self.stored_offset = self.folded_until
        self.folded_until = None
        self.deltas = {}
        self.dead_letters = []

    def reset(self, stored_offset: int | None) -> None:
        """Drop what was folded: another process flushed first, so read again from the store."""
        self.stored_offset = stored_offset
        self.position = stored_offset
        self.folded_until = None
        self.deltas = {}
        self.dead_letters = []
