"""A StatsD receiver for the metrics benchmarks: `_drain.py` in a child process (the daemon's
work is not the measured service's), and what to make of what it received."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness._machine import proc_cpu_seconds
from harness._process import PYTHON

if TYPE_CHECKING:
    from distcount_metrics import Metric


class StatsdDrain:
    """The parent's handle on the receiver: its port, and what arrived since the last take."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls) -> StatsdDrain:
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            str(Path(__file__).with_name("_drain.py")),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the StatsD drain did not start: {line!r}")
        return cls(process, int(line.split()[1]))

    async def take(self) -> dict[str, Any]:
        """What arrived since the last call: datagrams, bytes, lines, the sum of each counter
        ("name|#tags"), and the lines of each timer and gauge."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"report\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        taken: dict[str, Any] = json.loads(line)
        return taken

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.process.pid) or 0.0

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def add_tally(into: dict[str, Any], taken: dict[str, Any]) -> None:
    """Add one `take()` to a running total of the same shape."""
    for name in ("datagrams", "bytes", "lines"):
        into[name] = into.get(name, 0) + taken.get(name, 0)
    for name in ("counters", "timer_lines", "gauge_lines"):
        mine = into.setdefault(name, {})
        for key, value in taken.get(name, {}).items():
            mine[key] = mine.get(key, 0) + value


def counted(tally: dict[str, Any], metric: Metric, values: Sequence[object] = ()) -> int:
    """The sum counter `metric` reached in `tally` for the tag values given, whether they came
    as DogStatsD tags or in the StatsD name."""
    plain = ".".join([metric.full_name, *(str(v) for v in values)])
    wanted = {f"{k}:{v}" for k, v in zip(metric.tags, values, strict=True)}
    total = 0
    for key, value in tally.get("counters", {}).items():
        name, _, tags = key.partition("|#")
        if name == plain or (name == metric.full_name and wanted <= set(tags.split(","))):
            total += value
    return total
