"""What the aggregators have flushed, for many requests at once: the as_of of a read, and the
reads that wait for a write's token (read-your-writes).

One query serves them all: `current()` keeps the last answer for a short while, and while any
request waits for a token, one task asks PostgreSQL again every `poll_s` and wakes those whose
writes are flushed. A stale answer is still a true one for the reads that follow it: as_of only
moves forward, and a value read after an as_of holds everything that as_of promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final

from distcount_store import Flushed, StoreError

# how old the shared answer may be for the as_of of a read
_MAX_AGE_S: Final = 0.1


class FlushWatcher:
    def __init__(
        self,
        read: Callable[[], Awaitable[Flushed]],
        partitions: Callable[[], Awaitable[int | None]],
        poll_s: float = 0.02,
    ) -> None:
        self._read = read
        self._partitions = partitions
        self._poll_s = poll_s
        self._last: Flushed | None = None
        self._last_at = 0.0
        self._reading: asyncio.Future[Flushed] | None = None
        self._waiters: dict[asyncio.Future[Flushed], dict[int, int]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def current(self, max_age_s: float = _MAX_AGE_S) -> Flushed:
        """What is flushed, as read at most `max_age_s` ago (one query for many callers)."""
        if self._last is not None and time.monotonic() - self._last_at <= max_age_s:
            return self._last
        return await self._fresh()

    async def as_of(self, flushed: Flushed) -> datetime | None:
        """The topic's as_of: None until every partition has one."""
        partitions = await self._partitions()
        return None if partitions is None else flushed.oldest_as_of(partitions)

    async def wait(self, offsets: dict[int, int], timeout_s: float) -> Flushed | None:
        """What is flushed once it covers `offsets`; None if it does not within `timeout_s`."""
        flushed = await self.current(max_age_s=0)
        if flushed.covers(offsets):
            return flushed
        waiter: asyncio.Future[Flushed] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = offsets
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(waiter)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(waiter, None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _fresh(self) -> Flushed:
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
            self._reading.add_done_callback(self._read_done)
        return await asyncio.shield(self._reading)

    def _read_done(self, reading: asyncio.Future[Flushed]) -> None:
        self._reading = None
        if not reading.cancelled() and reading.exception() is None:
            self._last, self._last_at = reading.result(), time.monotonic()

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(self._poll_s)
            try:
                flushed = await self._fresh()
            except StoreError:
                continue  # the waiters' own deadlines end it; their reads report the failure
            for waiter, offsets in list(self._waiters.items()):
                if not waiter.done() and flushed.covers(offsets):
                    waiter.set_result(flushed)
