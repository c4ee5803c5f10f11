"""The one schedule of waits between attempts, for every loop that retries.

Retry libraries (tenacity, stamina) wrap a call and block until it succeeds; most of distcount's
retries are not shaped so. The aggregator keeps folding while PostgreSQL is down and only asks
"may I flush again yet?", and the producers and the local stack retry in loops that also watch
a stop signal. A schedule object serves all of them: ask for the next delay, reset on success.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable


class Backoff:
    """Delays from `first_s`, times `factor` after each one, at most `max_s`, each spread by up
    to +-`jitter` of itself so that many processes retrying together do not retry in step."""

    def __init__(
        self,
        first_s: float,
        max_s: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.1,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, not {first_s} and {max_s}")
        self.first_s = first_s
        self.max_s = max_s
        self._factor = factor
        self._jitter = jitter
        self._rand = rand
        self._next_s = first_s
        self.attempts = 0  # delays handed out since the last reset

    def next_s(self) -> float:
        """The delay before the next attempt; the one after it is longer, up to `max_s`."""
        delay = self._next_s
        self._next_s = min(self.max_s, delay * self._factor)
        self.attempts += 1
        return delay * (1 + self._jitter * (2 * self._rand() - 1))

    def reset(self) -> None:
        """An attempt succeeded: the next failure starts from `first_s` again."""
        self._next_s = self.first_s
        self.attempts = 0

    async def sleep(self, stop: asyncio.Event | None = None) -> bool:
        """Wait the next delay, or less if `stop` is set meanwhile; whether it was set."""
        delay = self.next_s()
        if stop is None:
            await asyncio.sleep(delay)
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        return stop.is_set()
