"""What the machine is, and how busy it is: the facts every report carries, and the wait for
other processes to leave the cores alone before a run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness._console import say

# Other processes taking this share of all cores or more skew a run's figures.
QUIET_BELOW = 0.15


def machine_facts(packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """The machine, Python, and the versions of `packages`, for a report."""
    facts: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }
    if packages:
        facts["versions"] = {name: _version(name) for name in packages}
    return facts


def machine_line(facts: dict[str, Any]) -> str:
    """`nproc 2 (model), 3.8 GiB, Python 3.11.7`: the start of every report's machine line."""
    return (
        f"nproc {facts['nproc']} ({facts['cpu_model']}), {facts['memory_gib']} GiB, "
        f"Python {facts['python']}"
    )


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_between(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The fraction of all cores that was busy between two cpu_jiffies() readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (Linux /proc), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


async def background_busy(wait_quiet_s: float = 0.0) -> float | None:
    """How busy the machine is (fraction of all cores, sampled over a second) with nothing of
    the benchmark running. Another process that takes CPU now (another benchmark, a test suite)
    skews every figure of the run: wait up to `wait_quiet_s` for it to calm down, then go on
    with a warning."""
    deadline = time.monotonic() + wait_quiet_s
    announced = False
    while True:
        before = cpu_jiffies()
        await asyncio.sleep(1.0)
        busy = busy_between(before, cpu_jiffies())
        if busy is None or busy < QUIET_BELOW:
            return busy
        if time.monotonic() >= deadline:
            say(
                f"WARNING: the machine is {busy:.0%} busy before the run starts: other "
                "processes share the cores, and the figures of this run are skewed by them"
            )
            return busy
        if not announced:
            say(
                f"the machine is {busy:.0%} busy with other processes: waiting up to "
                f"{wait_quiet_s:.0f} s for it to calm down"
            )
            announced = True
