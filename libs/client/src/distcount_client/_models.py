"""What the client's methods return: the ingress's answers as frozen, typed values.

Times are aware datetimes in UTC. `as_of` is the read side's promise: every increment accepted
(answered 202, or acknowledged to a direct producer) before it is in the values; None until every
partition has been flushed once, or when the route that answered does not say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Counter:
    """A counter's total. `complete` is False only when a read asked to see a write (`after`)
    and the ingress stopped waiting first: `value` may not hold that write yet."""

    key: str
    value: int
    as_of: datetime | None
    complete: bool = True


@dataclass(frozen=True)
class Written:
    """A write the ingress accepted (202): the increments it sent to Kafka, summed per key, and
    the token a read can wait for (None from an ingress older than tokens)."""

    token: str | None
    increments: dict[str, int]
    # the Idempotency-Key the write was sent with: sending it again under this key (with the
    # same body) cannot count it twice
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Counted:
    """A write now in the totals (`wait_for`)."""

    token: str
    as_of: datetime | None


@dataclass(frozen=True)
class Point:
    """One step of a history: the sum of the increments counted from `start`, for one step."""

    start: datetime
    value: int


@dataclass(frozen=True)
class History:
    """A counter's sums per step over [start, end): the range asked for, widened to whole steps
    (epoch-aligned). Steps with nothing counted are 0."""

    key: str
    start: datetime
    end: datetime
    step_ms: int
    points: list[Point]
    as_of: datetime | None


@dataclass(frozen=True)
class Entry:
    """A counter in a listing (its total) or in `top` (its sum over the window)."""

    key: str
    value: int


@dataclass(frozen=True)
class Page:
    """Counters in byte order of their keys; `next_cursor` asks for the page after this one,
    None on the last page."""

    counters: list[Entry]
    next_cursor: str | None


@dataclass(frozen=True)
class Top:
    """The counters with the largest sums over the last `window_ms`, largest first."""

    window_ms: int
    counters: list[Entry]
    as_of: datetime | None
