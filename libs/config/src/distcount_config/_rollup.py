"""Rollup tiers (DISTCOUNT_ROLLUP): how `distcount compact` merges old event rows into coarser
buckets, as a value and as the kind of setting that reads it.

`1h@1d,1d@30d` reads: rows whose bucket is more than a day old are merged into hour buckets, and
those more than 30 days old into day buckets. Widths and ages are `<whole number><unit>`, the
unit one of ms, s, m, h, d (as the read side's `step`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Final

from distcount_config._kinds import Kind

NONE: Final = "none"
# the event log keeps a rolled-up row's width in a 32-bit integer column (`width_ms`)
MAX_WIDTH_MS: Final = 2**31 - 1
# far enough back for any history, near enough that `now - age` stays a date
MAX_AGE_MS: Final = 36_500 * 86_400_000

_UNITS_MS: Final = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_DURATION_RE = re.compile(r"(\d{1,12})(ms|s|m|h|d)")


@dataclass(frozen=True)
class RollupTier:
    """Rows whose bucket starts more than `age_ms` ago are merged into buckets of `width_ms`
    (aligned to the epoch, as the aggregators' buckets are)."""

    width_ms: int
    age_ms: int

    def __str__(self) -> str:
        return f"{duration_text(self.width_ms)}@{duration_text(self.age_ms)}"


def duration_ms(text: str) -> int:
    """`90s` -> 90000; `ValueError` for anything but a whole number and a unit."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text.strip()!r} is not a whole number and a unit (ms, s, m, h or d)")
    return int(match[1]) * _UNITS_MS[match[2]]


def duration_text(ms: int) -> str:
    """The shortest way to write `ms` milliseconds: 3600000 -> `1h`, 90000 -> `90s`."""
    for unit, size in _UNITS_MS.items():
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class Rollup(Kind[tuple[RollupTier, ...]]):
    """`none` (no rollup) or tiers `<width>@<age>`, finest first: each width a multiple of the
    one before (a coarse bucket holds whole finer ones), each age older than the one before."""

    @property
    def accepts(self) -> str:
        return (
            f"{NONE}, or comma-separated tiers <width>@<age> such as 1h@1d,1d@30d (each a whole "
            "number and a unit: ms, s, m, h, d), widths each a multiple of the one before and at "
            "most 24d, ages growing"
        )

    def parse(self, raw: str) -> tuple[RollupTier, ...]:
        if raw.lower() == NONE:
            return ()
        tiers = tuple(_tier(part) for part in raw.split(","))
        for finer, coarser in itertools.pairwise(tiers):
            if coarser.width_ms <= finer.width_ms or coarser.width_ms % finer.width_ms:
                raise ValueError(f"{coarser}: its width is not a larger multiple of {finer}'s")
            if coarser.age_ms <= finer.age_ms:
                raise ValueError(f"{coarser}: its age is not older than {finer}'s")
        return tiers

    def show(self, value: tuple[RollupTier, ...]) -> str:
        return ",".join(map(str, value)) if value else NONE


def _tier(text: str) -> RollupTier:
    width, at, age = text.strip().partition("@")
    if not at:
        raise ValueError(f"{text.strip()!r} is not <width>@<age>")
    tier = RollupTier(duration_ms(width), duration_ms(age))
    if not 0 < tier.width_ms <= MAX_WIDTH_MS:
        raise ValueError(f"{tier}: a width is above 0 and at most 24d")
    if not 0 < tier.age_ms <= MAX_AGE_MS:
        raise ValueError(f"{tier}: an age is above 0 and at most 36500d")
    return tier
