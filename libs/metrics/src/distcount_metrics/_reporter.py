"""The tick: every interval, the recorder's snapshot goes to the sink (StatsD or the console).

A sink that fails costs that tick's metrics and a warning, never the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from distcount_metrics._process import LoopLagMonitor
from distcount_metrics._recorder import Recorder, Snapshot

log = logging.getLogger("distcount.metrics")


class Sink(Protocol):
    def send(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class Reporter:
    def __init__(
        self, recorder: Recorder, sink: Sink, interval_s: float, loop_lag: LoopLagMonitor
    ) -> None:
        self._recorder = recorder
        self._sink = sink
        self._interval_s = interval_s
        self._loop_lag = loop_lag
        self._last = time.monotonic()
        self._failing = False

    def report(self) -> None:
        """Send what was observed since the last report."""
        now = time.monotonic()
        try:
            snapshot = self._recorder.collect(now - self._last)
            self._sink.send(snapshot)
        except Exception as exc:
            if not self._failing:
                log.warning("metrics were not reported (%s: %s)", type(exc).__name__, exc)
            self._failing = True
        else:
            self._failing = False
        self._last = now

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Report every interval while the context runs, and once more as it ends."""
        self._last = time.monotonic()
        tasks = [asyncio.ensure_future(self._ticks()), asyncio.ensure_future(self._loop_lag.run())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.report()
            self._sink.close()

    async def _ticks(self) -> None:
        next_at = time.monotonic() + self._interval_s
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self.report()
            # a tick that ran late does not make the next ones run early
            next_at = max(next_at + self._interval_s, time.monotonic())
