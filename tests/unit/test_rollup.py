"""Rollup as pure logic: the DISTCOUNT_ROLLUP setting, the ranges each tier merges, and what
`distcount compact` prints as it goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from distcount_cli._compact import Report
from distcount_config import ConfigError, RollupTier, load
from distcount_store import Merged, TierRange, tier_ranges
from distcount_store._compact import floor_to

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
NOW = datetime(2026, 12, 1, 13, 45, 30, tzinfo=UTC)


def _rollup(raw: str, **more: str) -> tuple[RollupTier, ...]:
    return load({"DISTCOUNT_ROLLUP": raw, **more}).rollup


def test_the_default_is_hours_after_a_day_and_days_after_thirty() -> None:
    assert load({}).rollup == (RollupTier(HOUR_MS, DAY_MS), RollupTier(DAY_MS, 30 * DAY_MS))
    assert str(RollupTier(HOUR_MS, DAY_MS)) == "1h@1d"


def test_none_turns_rollup_off() -> None:
    assert _rollup("none") == ()
    assert _rollup("NONE") == ()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("1h", "is not <width>@<age>"),
        ("1h@", "whole number and a unit"),
        ("1 hour@1d", "whole number and a unit"),
        ("0m@1d", "a width is above 0"),
        ("30m@1d,1h@12h", "its age is not older"),
        ("1h@1d,90m@30d", "not a larger multiple"),
        ("1h@1d,1h@30d", "not a larger multiple"),
        ("25d@30d", "at most 24d"),
    ],
)
def test_a_bad_rollup_is_refused_naming_the_variable(raw: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _rollup(raw)
    assert "DISTCOUNT_ROLLUP" in str(refused.value)
    assert words in str(refused.value)


def test_buckets_are_aligned_to_the_epoch() -> None:
    assert floor_to(NOW, HOUR_MS) == datetime(2026, 12, 1, 13, tzinfo=UTC)
    assert floor_to(NOW, DAY_MS) == datetime(2026, 12, 1, tzinfo=UTC)
    assert floor_to(NOW, 15 * 60_000) == datetime(2026, 12, 1, 13, 45, tzinfo=UTC)
    exact = datetime(2026, 12, 1, 13, tzinfo=UTC)
    assert floor_to(exact, HOUR_MS) == exact


def test_tiers_are_walked_coarsest_first_each_below_its_own_cutoff() -> None:
    hours, days = RollupTier(HOUR_MS, DAY_MS), RollupTier(DAY_MS, 30 * DAY_MS)
    coarse, fine = tier_ranges([hours, days], NOW)
    # rows older than 30 days (to a whole day) go straight to days, whatever their width
    assert (coarse.tier, coarse.floor) == (days, None)
    assert coarse.cutoff == datetime(2026, 11, 1, tzinfo=UTC)
    # hours take the range between the day tier's cutoff and a day ago (to a whole hour)
    assert (fine.tier, fine.floor) == (hours, coarse.cutoff)
    assert fine.cutoff == datetime(2026, 11, 30, 13, tzinfo=UTC)


def _merged(tier_range: TierRange, start: datetime, end: datetime, rows: int) -> Merged:
    first = datetime(2026, 11, 29, tzinfo=UTC)
    return Merged(tier_range, first, start, end, rows, rows // 60)


def test_progress_is_a_line_a_second_at_most_with_what_is_left() -> None:
    said: list[str] = []
    now = [0.0]
    report = Report(said.append, live=False, clock=lambda: now[0])
    tier = RollupTier(HOUR_MS, DAY_MS)
    (hours,) = tier_ranges([tier], NOW)
    report.begin((tier,))
    start = datetime(2026, 11, 29, tzinfo=UTC)
    for n, at in enumerate([0.1, 0.5, 0.9]):
        now[0] = at
        begin = start + timedelta(hours=n)
        report.merged(_merged(hours, begin, begin + timedelta(hours=1), 6000))
    now[0] = 2.0
    report.tier_done(hours)
    report.end(stopped=False)
    assert said[0] == "compacting counter_events: tiers 1h@1d (coarsest first)"
    chunk_lines = [line for line in said if line.startswith("1h@1d: 2026")]
    # three chunks at 0.1, 0.5 and 0.9 s: one line, the first
    assert len(chunk_lines) == 1
    assert "6,000 rows merged into 100" in chunk_lines[0]
    assert "1h buckets left: 36" in chunk_lines[0]  # 11-29 01:00 to the cutoff, 11-30 13:00
    assert said[-2].startswith("1h@1d: 18,000 rows merged into 300 in")
    assert said[-1].startswith("compacted: 18,000 rows merged into 300")


def test_a_stopped_pass_says_the_next_run_goes_on() -> None:
    said: list[str] = []
    report = Report(said.append, live=False, clock=lambda: 1.0)
    report.begin((RollupTier(HOUR_MS, DAY_MS),))
    report.end(stopped=True)
    assert said[-1].startswith("stopped between two chunks: 0 rows merged")
    assert "the next run goes on from there" in said[-1]
