"""The one backoff schedule: growth, cap, spread, reset, and a sleep a stop signal cuts short."""

from __future__ import annotations

import asyncio
import time

import pytest

from distcount_core import Backoff


def test_delays_double_up_to_the_cap_and_start_again_after_a_reset() -> None:
    backoff = Backoff(0.5, 4.0, jitter=0.0)
    assert [backoff.next_s() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_s() == 0.5


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.9), (0.5, 1.0), (1.0, 1.1)])
def test_each_delay_is_spread_by_the_jitter(draw: float, expected: float) -> None:
    assert Backoff(1.0, 1.0, jitter=0.1, rand=lambda: draw).next_s() == pytest.approx(expected)


def test_a_schedule_that_cannot_be_is_refused() -> None:
    with pytest.raises(ValueError, match="first_s"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="first_s"):
        Backoff(2, 1)


async def test_a_stop_signal_cuts_the_sleep_short() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = time.monotonic()
    assert await Backoff(10.0, 10.0).sleep(stop) is True
    assert time.monotonic() - started < 5
    assert await Backoff(0.01, 0.01).sleep(asyncio.Event()) is False
