"""Pure folding logic: time buckets and a partition's in-memory state, with no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from distcount_codec import InvalidRecord, RecordDecoder

# probes kept per partition while it lags (one is taken every PROBE_INTERVAL_MS)
_MAX_PROBES: Final = 16
# 9999-12-31T23:59:59.999Z; PostgreSQL timestamps end not long after
MAX_TIMESTAMP_MS: Final = 253_402_300_799_999


def bucket_start_ms(timestamp_ms: int, bucket_ms: int) -> int:
    """The start of the bucket holding `timestamp_ms` (buckets are aligned to the epoch)."""
    return timestamp_ms - timestamp_ms % bucket_ms


def next_tick_ms(now_ms: int, interval_ms: int) -> int:
    """The first interval boundary strictly after `now_ms`."""
    return (now_ms // interval_ms + 1) * interval_ms


@dataclass(slots=True)
class Taken:
    """What a flush writes, taken from a partition's state (`PartitionState.take`): the deltas
    of the offsets from `expected_offset` (the offset stored when it was taken) to
    `next_offset`, and the as_of reached with them."""

    deltas: dict[int, dict[str, int]]
    folded_until: int | None
    as_of_ms: int | None
    expected_offset: int | None
    next_offset: int
    # records with an id: id -> (bucket start, key, value), the first of each id folded
    keyed: dict[str, tuple[int, str, int]]
    # records whose id was folded before, since the last take: not counted (`conflicting` of
    # them with another increment than the first)
    repeated: int = 0
    conflicting: int = 0

    @property
    def entries(self) -> int:
        return sum(len(keys) for keys in self.deltas.values()) + len(self.keyed)


class PartitionState:
    """What one assigned partition has folded since its last committed flush.

    `stored_offset` is the offset PostgreSQL holds for the partition (None: no row yet): the flush
    checks it is still there before writing. `position` is the offset of the next record to fold,
    so records at earlier offsets (already counted) are never folded twice.

    `as_of_ms`: a time before which every record the broker acknowledged is folded. It comes from
    probes: at time t the broker was asked for the partition's end (its high watermark: reading
    uncommitted, so that a transaction whose commit was acknowledged counts even before its
    markers are written); whatever it acknowledged before t lies below that end. The folded
    offset, read committed, reaches that end only once every transaction below it is decided, so
    then t is an as_of. The flush stores it with the offset.

    Records with an id are not summed into the buckets: `keyed` keeps the first of each id, and
    the flush counts it only if no flush stored its id within the window (see distcount_store).
    """

    __slots__ = (
        "as_of_ms",
        "conflicting",
        "deltas",
        "folded_until",
        "keyed",
        "partition",
        "position",
        "probes",
        "repeated",
        "stored_offset",
    )

    def __init__(self, partition: int, stored_offset: int | None) -> None:
        self.partition = partition
        self.stored_offset = stored_offset
        self.position = stored_offset
        # offset after the last record folded or dead-lettered; None: nothing to flush
        self.folded_until: int | None = None
        # bucket start (ms) -> key -> delta
        self.deltas: dict[int, dict[str, int]] = {}
        # (time ms, end offset) of the probes not reached yet, oldest first
        self.probes: list[tuple[int, int]] = []
        self.as_of_ms: int | None = None  # reached, not stored yet
        # id -> (bucket start, key, value): the first record folded of each id
        self.keyed: dict[str, tuple[int, str, int]] = {}
        self.repeated = 0  # records whose id was folded before, since the last take
        self.conflicting = 0  # those of them with another increment than the first

    @property
    def entries(self) -> int:
        return sum(len(keys) for keys in self.deltas.values()) + len(self.keyed)

    @property
    def dirty(self) -> bool:
        return self.folded_until is not None

    @property
    def flush_due(self) -> bool:
        """Something to store: folded records, or an as_of that moved."""
        return self.folded_until is not None or self.as_of_ms is not None

    @property
    def next_offset(self) -> int | None:
        """The offset a flush stores now (None: nothing to store, not even where it stands)."""
        if self.folded_until is not None:
            return self.folded_until
        return self.stored_offset if self.stored_offset is not None else self.position

    def probe(self, time_ms: int, end_offset: int) -> None:
        """The broker said, asked at `time_ms`, that the partition ends at `end_offset`."""
        self.probes.append((time_ms, end_offset))
        if len(self.probes) > _MAX_PROBES:  # a lagging partition: the newest tell the most
            del self.probes[0]
        self.reach()

    def reach(self) -> None:
        """Take the probes the folded offset has reached as the as_of to store."""
        folded = self.next_offset
        if folded is None:
            return
        while self.probes and self.probes[0][1] <= folded:
            self.as_of_ms = self.probes.pop(0)[0]

    def committed(self) -> None:
        """The flush of everything folded so far committed: start afresh from there."""
        self.stored_offset = self.next_offset
        self.folded_until = None
        self.deltas = {}
        self.keyed = {}
        self.repeated = self.conflicting = 0
        self.as_of_ms = None

    def take(self) -> Taken:
        """Hand what is folded to a flush (`flush_due` and a `next_offset`), and go on folding
        the records after it into a state of its own: `landed` or `give_back` once the flush
        has ended. The stored offset stays until then, as PostgreSQL holds it."""
        next_offset = self.next_offset
        assert next_offset is not None
        taken = Taken(
            self.deltas,
            self.folded_until,
            self.as_of_ms,
            self.stored_offset,
            next_offset,
            self.keyed,
            self.repeated,
            self.conflicting,
        )
        self.deltas = {}
        self.keyed = {}
        self.repeated = self.conflicting = 0
        self.folded_until = None
        self.as_of_ms = None
        return taken

    def landed(self, taken: Taken) -> None:
        """The flush of `taken` committed: PostgreSQL now holds its offset."""
        self.stored_offset = taken.next_offset

    def give_back(self, taken: Taken) -> None:
        """The flush of `taken` failed: what it took is folded again, ahead of what came since,
        so that the next flush writes both from the offset still stored."""
        mine, self.deltas = self.deltas, taken.deltas
        for bucket_start, keys in mine.items():
            theirs = self.deltas.get(bucket_start)
            if theirs is None:
                self.deltas[bucket_start] = keys
                continue
            for key, delta in keys.items():
                theirs[key] = theirs.get(key, 0) + delta
        # the first record of an id is the one taken, when both have one
        keyed, self.keyed = self.keyed, taken.keyed
        for ident, entry in keyed.items():
            self.keep(ident, entry)
        self.repeated += taken.repeated
        self.conflicting += taken.conflicting
        if self.folded_until is None:
            self.folded_until = taken.folded_until
        if self.as_of_ms is None:  # else a later one was reached since
            self.as_of_ms = taken.as_of_ms

    def keep(self, ident: str, entry: tuple[int, str, int]) -> None:
        """Keep a record with an id (bucket start, key, value) unless one of its id is kept."""
        kept = self.keyed.setdefault(ident, entry)
        if kept is not entry:
            self.repeated += 1
            if kept[1:] != entry[1:]:
                self.conflicting += 1

    def reset(self, stored_offset: int | None) -> None:
        """Drop what was folded: another process flushed first, so read again from the store."""
        self.stored_offset = stored_offset
        self.position = stored_offset
        self.folded_until = None
        self.deltas = {}
        self.keyed = {}
        self.repeated = self.conflicting = 0
        self.probes = []
        self.as_of_ms = None


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
    (see `RecordDecoder`). A record with an id goes to the state's `keyed` instead of the
    buckets, unless one of its id is there already.
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
                key, value, ident = decoded = decode(record.value)
            except InvalidRecord as exc:
                rejected.append((record, str(exc)))
                continue
            if ident is not None:
                if reason := _fold_keyed(state, record.timestamp, bucket_ms, decoded):
                    rejected.append((record, reason))
                continue
        else:
            key, value = increment
        timestamp = record.timestamp
        if timestamp is None or not low <= timestamp < high:
            if problem := _timestamp_problem(timestamp):
                rejected.append((record, problem))
                continue
            low = timestamp - timestamp % bucket_ms
            high = low + bucket_ms
            current = buckets.get(low) or buckets.setdefault(low, {})
        current[key] = current.get(key, 0) + value
    state.position = state.folded_until = records[-1].offset + 1
    return rejected


def _timestamp_problem(timestamp: int | None) -> str | None:
    if timestamp is None or timestamp < 0:
        return "record has no timestamp"
    if timestamp > MAX_TIMESTAMP_MS:
        return f"timestamp {timestamp} is past the year 9999"
    return None


def _fold_keyed(
    state: PartitionState,
    timestamp: int | None,
    bucket_ms: int,
    decoded: tuple[str, int, str | None],
) -> str | None:
    """Keep a record with an id, the first of its id only; what is wrong with it, if anything."""
    if problem := _timestamp_problem(timestamp):
        return problem
    key, value, ident = decoded
    assert timestamp is not None  # checked above
    assert ident is not None  # the caller's check
    state.keep(ident, (timestamp - timestamp % bucket_ms, key, value))
    return None
