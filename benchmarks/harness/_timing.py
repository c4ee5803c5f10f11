"""Timing work done in this process in chunks: wall time, CPU time, and how much of the machine
other processes took meanwhile."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from harness._machine import QUIET_BELOW, busy_between, cpu_jiffies


class Meter:
    """Wall time, this process's CPU time and the machine's busy jiffies, added up over the
    chunks of one side of a round. `helpers_cpu_s` reads the CPU seconds of the processes that
    serve the measurement (a datagram drain): theirs is not counted as other processes' load."""

    def __init__(self, helpers_cpu_s: Callable[[], float] = lambda: 0.0) -> None:
        self._helpers_cpu_s = helpers_cpu_s
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.chunk_wall_s: list[float] = []  # in the order they ran
        self._helpers_s = 0.0
        self._busy = 0
        self._total = 0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        jiffies, helpers = cpu_jiffies(), self._helpers_cpu_s()
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        wall_s = time.perf_counter() - wall
        self.wall_s += wall_s
        self.chunk_wall_s.append(round(wall_s, 6))
        self.cpu_s += time.process_time() - cpu
        after = cpu_jiffies()
        self._busy += after[0] - jiffies[0]
        self._total += after[1] - jiffies[1]
        self._helpers_s += self._helpers_cpu_s() - helpers

    @property
    def busy(self) -> float | None:
        """The share of all cores busy during the chunks, whoever used them."""
        return busy_between((0, 0), (self._busy, self._total))

    @property
    def others(self) -> float | None:
        """The share of all cores busy with neither this process nor its helpers."""
        busy = self.busy
        if busy is None or self.wall_s <= 0:
            return None
        mine = (self.cpu_s + self._helpers_s) / (self.wall_s * len(os.sched_getaffinity(0)))
        return max(0.0, busy - mine)

    @property
    def disturbed(self) -> bool:
        return self.others is not None and self.others >= QUIET_BELOW


def share(total: int, k: int, chunks: int) -> range:
    """The k-th of `chunks` consecutive shares of range(total)."""
    return range(total * k // chunks, total * (k + 1) // chunks)
