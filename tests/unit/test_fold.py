from __future__ import annotations

import pytest

from distcount_aggregator import PartitionState, bucket_start_ms, next_tick_ms


@pytest.mark.parametrize(
    ("timestamp_ms", "bucket_ms", "start"),
    [
        (0, 5000, 0),
        (4999, 5000, 0),
        (5000, 5000, 5000),
        (1_700_000_001_234, 1000, 1_700_000_001_000),
    ],
)
def test_bucket_start(timestamp_ms: int, bucket_ms: int, start: int) -> None:
    assert bucket_start_ms(timestamp_ms, bucket_ms) == start


def test_ticks_fall_on_interval_boundaries() -> None:
    # a fake clock stepping through a boundary
    assert next_tick_ms(0, 5000) == 5000
    assert next_tick_ms(4999, 5000) == 5000
    assert next_tick_ms(5000, 5000) == 10000
    assert next_tick_ms(12_345, 1000) == 13_000


def test_partition_state_lifecycle() -> None:
    state = PartitionState(2, stored_offset=None)
    assert not state.dirty
    state.deltas[(0, "a")] = 3
    state.folded_until = state.position = 10
    assert state.dirty

    state.committed()
    assert (state.stored_offset, state.folded_until, state.deltas, state.position) == (
        10,
        None,
        {},
        10,
    )

    state.deltas[(0, "b")] = 1
    state.folded_until = state.position = 12
    state.reset(stored_offset=11)  # another process flushed up to 11
    assert (state.stored_offset, state.position, state.folded_until, state.deltas) == (
        11,
        11,
        None,
        {},
    )
