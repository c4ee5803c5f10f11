"""When the aggregator flushes: ticks aligned to the interval, early at the memory bound, and
not while a failed flush waits out its backoff (a fake clock throughout)."""

from __future__ import annotations

from distcount_aggregator._checkpoint import MAX_WAIT_MS, FlushPolicy


def test_ticks_fall_on_interval_boundaries() -> None:
    policy = FlushPolicy(interval_ms=1000, max_live_entries=100, now_ms=10_250)
    assert policy.wait_ms(10_250) == MAX_WAIT_MS
    assert policy.wait_ms(10_900) == 100
    assert policy.due(10_999, live_entries=0) is None
    assert policy.due(11_000, live_entries=0) == "tick"
    assert policy.due(11_001, live_entries=0) is None  # the next tick is 12,000
    assert policy.due(13_500, live_entries=0) == "tick"  # late: one tick, not two
    assert policy.due(13_999, live_entries=0) is None


def test_the_memory_bound_flushes_early() -> None:
    policy = FlushPolicy(interval_ms=1000, max_live_entries=100, now_ms=0)
    assert policy.due(10, live_entries=99) is None
    assert policy.due(10, live_entries=100) == "memory"
    assert policy.full(100)
    assert not policy.full(99)


def test_a_failed_flush_waits_out_a_growing_backoff_then_starts_afresh() -> None:
    policy = FlushPolicy(interval_ms=100, max_live_entries=10, now_ms=0)
    policy.flushed(False, now_ms=1000)
    assert policy.backing_off(1000)
    assert policy.due(1100, live_entries=50) is None  # a tick and full, yet not now
    assert not policy.backing_off(1300)  # 0.25 s (+-10 %) later
    assert policy.due(1300, live_entries=0) == "tick"
    policy.flushed(False, now_ms=1300)
    assert policy.backing_off(1700)  # 0.5 s this time
    assert not policy.backing_off(1900)
    policy.flushed(True, now_ms=1900)
    policy.flushed(False, now_ms=2000)
    assert not policy.backing_off(2300)  # back to 0.25 s after a success
