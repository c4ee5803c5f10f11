"""What every service reports about its own process: resident memory and event-loop lag."""

from __future__ import annotations

import asyncio
import os
import resource
from pathlib import Path
from typing import Final

_PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = Path("/proc/self/statm")


def memory_rss_bytes() -> int:
    """The resident set now (Linux), else the peak the kernel reports."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        # ru_maxrss is in KiB on Linux (where statm is read instead) and the BSDs
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class LoopLagMonitor:
    """Sleeps `period_s` again and again; how late each wake-up comes is the loop's lag."""

    def __init__(self, period_s: float = 0.1) -> None:
        self._period_s = period_s
        self._worst_s = 0.0

    def take_worst_ms(self) -> float:
        """The worst lag since the last call, in ms."""
        worst, self._worst_s = self._worst_s, 0.0
        return round(worst * 1000, 3)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self._period_s
            await asyncio.sleep(self._period_s)
            self._worst_s = max(self._worst_s, loop.time() - expected)
