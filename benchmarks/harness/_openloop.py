"""Open-loop load: requests on a fixed timetable, each timed from the moment the timetable gave
it, so that a slow answer shows in the latencies instead of holding back the requests after it
(wrk, in `_wrk.py`, is closed-loop: it measures a saturated server, this measures a server at a
given rate). The load is `_openloop_driver.py` in a child process of its own; a server under it
is a side started with `served`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness._console import say
from harness._machine import background_busy, busy_between, cpu_jiffies
from harness._openloop_driver import quantiles_ms
from harness._process import PYTHON, Child, Line, child_env, free_port
from harness._wrk import wait_ready

DRIVER = Path(__file__).with_name("_openloop_driver.py")
_NPROC = len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class OpenLoop:
    """One load: what each request is, how many a second, for how long (after a warm-up at
    the same rate, not measured). See `_openloop_driver.py` for the modes and the checks.

    `processes` > 1 splits the rate over that many drivers, each with a timetable of its own,
    for a load whose requests cost the driver more CPU than one process has (the client's)."""

    label: str  # how the report names it: "GET /counters/{key}"
    mode: str  # "http", "post", "client" or "ryw"
    rate: float  # requests (operations) a second, all drivers together
    duration_s: float
    warmup_s: float
    target: str  # a path (http, post), a key (client), "{n}" a random index; a key prefix (ryw)
    keys: int = 1  # "{n}" is drawn from range(keys); the keys of post's increments too
    batch: int = 0  # post: 0 for one increment a request, N for N increments a request
    check: str = "status"  # or "counter"
    processes: int = 1
    timeout_s: float = 10.0  # per request (operation): past it, an error
    max_in_flight: int = 512  # per driver: a request due beyond it is not sent (an error)
    seed: int = 1

    def spec(self, base_url: str, process: int, raw_out: Path) -> dict[str, Any]:
        """What driver `process` (from 0) of this load is given."""
        target = self.target
        if self.mode == "ryw" and self.processes > 1:
            target += f"p{process}."  # each driver's keys its own
        return {
            **asdict(self),
            "rate": self.rate / self.processes,
            "target": target,
            "seed": self.seed * 1000 + process,
            "base_url": base_url,
            "raw_out": str(raw_out),
        }


@dataclass
class OpenLoopRun:
    """One load against one server: the drivers' figures merged (see
    `_openloop_driver.drive`), and what the server and the machine spent meanwhile."""

    side: str
    index: int
    load: OpenLoop
    result: dict[str, Any]
    server_cpu_s: float | None  # during the measured phase
    machine_busy: float | None  # the whole machine, during the measured phase
    background_busy: float | None = None  # before the server was started
    extra: dict[str, Any] = field(default_factory=dict)  # what the script adds (its checks)

    def latency(self, q: str) -> float:
        """A latency figure in milliseconds: "p50", "p99", "max", ..."""
        lat = self.result["latency_ms"]
        return float("nan") if lat is None else float(lat[q])

    @property
    def failures(self) -> int:
        """Requests that failed or answered wrongly, warm-up included."""
        r = self.result
        return int(
            r["errors"] + r["check_failures"] + r["warmup_check_failures"] + r["warmup_errors"]
        )

    @property
    def server_cpu_us_per_request(self) -> float | None:
        answered = self.result["answered_2xx"]
        cpu = self.server_cpu_s
        return None if cpu is None or not answered else cpu / answered * 1e6

    @property
    def others_busy(self) -> float | None:
        """The share of all cores busy during the measured phase with neither the server nor
        the drivers: PostgreSQL, Kafka, and whatever else runs on the machine."""
        busy, span = self.machine_busy, float(self.result["span_s"])
        if busy is None or self.server_cpu_s is None or span <= 0:
            return None
        ours = (self.server_cpu_s + float(self.result["driver_cpu_s"])) / (span * _NPROC)
        return max(0.0, busy - ours)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failures": self.failures, "others_busy": self.others_busy}


def merged(results: list[dict[str, Any]], raws: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several drivers of one load as one: counts added, quantiles over every
    request of all of them."""
    first = results[0]
    counts = (
        *("scheduled", "answered_2xx", "errors", "check_failures", "warmup_check_failures"),
        *("warmup_errors", "warmup_answered_2xx", "driver_cpu_s", "connections_opened"),
    )
    total: dict[str, Any] = {name: sum(r[name] for r in results) for name in counts}
    outcomes: collections.Counter[str] = collections.Counter()
    for r in results:
        outcomes.update(r["outcomes"])
    span_s = max(r["span_s"] for r in results)
    parts: dict[str, list[float]] = collections.defaultdict(list)
    for raw in raws:
        for name, values in raw["parts_s"].items():
            parts[name] += values
    sent = None
    if first["sent"] is not None:
        sent = {name: sum(r["sent"][name] for r in results) for name in first["sent"]}
    return {
        "mode": first["mode"],
        "processes": len(results),
        **total,
        "outcomes": dict(outcomes),
        "first_failure": next((r["first_failure"] for r in results if r["first_failure"]), None),
        "span_s": span_s,
        "achieved_per_s": total["answered_2xx"] / span_s if span_s > 0 else 0.0,
        "latency_ms": quantiles_ms([v for raw in raws for v in raw["latencies_s"]]),
        "send_lag_ms": quantiles_ms([v for raw in raws for v in raw["lags_s"]]),
        "parts_ms": {name: quantiles_ms(values) for name, values in parts.items()},
        "sent": sent,
    }


async def drive(
    side: str,
    index: int,
    load: OpenLoop,
    base_url: str,
    log_dir: Path,
    *,
    server: Child | None = None,
) -> OpenLoopRun:
    """Run `load` against `base_url` in child processes; `server`'s CPU time is read when the
    (first) measured phase starts and when every driver is done."""
    at_start: dict[str, Any] = {}

    def on_line(line: Line) -> None:
        if line.text == "measuring" and "jiffies" not in at_start:
            at_start["cpu"] = server.cpu_seconds() if server is not None else None
            at_start["jiffies"] = cpu_jiffies()
        elif line.text.startswith("progress "):
            say(f"  {side}: {line.text.removeprefix('progress ')} {load.label}")
        elif line.stream == "err":
            say(f"  {side} driver stderr: {line.text}")

    name = f"run{index}-{side}-{load.mode}".replace(" ", "-")
    split = f" by {load.processes} drivers" if load.processes > 1 else ""
    say(
        f"run {index} {side}: {load.label} at {load.rate:,.0f}/s{split} for {load.duration_s:g} "
        f"s (after {load.warmup_s:g} s of warm-up), open loop"
    )
    raw_paths = [log_dir / f"{name}-driver{p}.json" for p in range(load.processes)]
    children: list[Child] = []
    try:
        for p, raw_path in enumerate(raw_paths):
            spec = json.dumps(load.spec(base_url, p, raw_path))
            children.append(
                await Child.spawn(
                    f"open-loop driver {p} ({side})",
                    [PYTHON, str(DRIVER), "--spec", spec],
                    child_env({}),
                    log_dir / f"{name}-driver{p}.log",
                    on_line,
                )
            )
        timeout_s = load.warmup_s + load.duration_s + load.timeout_s + 60
        done = [await c.wait_for_line(lambda t: t.startswith("done "), timeout_s) for c in children]
    finally:
        for child in children:
            await child.stop()
    cpu_after = server.cpu_seconds() if server is not None else None
    cpu_before = at_start.get("cpu")
    results = [json.loads(line.text.removeprefix("done ")) for line in done]
    raws = [json.loads(path.read_text(encoding="utf-8")) for path in raw_paths]
    result = merged(results, raws)
    run = OpenLoopRun(
        side,
        index,
        load,
        result,
        None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        busy_between(at_start["jiffies"], cpu_jiffies()) if "jiffies" in at_start else None,
    )
    lat = result["latency_ms"] or {}
    say(
        f"run {index} {side}: {result['achieved_per_s']:,.0f}/s answered, p50 "
        f"{lat.get('p50', float('nan')):.2f} ms, p99 {lat.get('p99', float('nan')):.2f} ms, max "
        f"{lat.get('max', float('nan')):.2f} ms; {run.failures:,} failed or wrong"
        + (f" (first: {result['first_failure']})" if result["first_failure"] else "")
    )
    return run


@contextlib.asynccontextmanager
async def served(
    side: str,
    index: int,
    spawn: Callable[[int], Awaitable[Child]],
    *,
    ready_timeout_s: float,
    wait_quiet_s: float,
) -> AsyncIterator[tuple[Child, str, float | None]]:
    """A server started afresh by `spawn(port)` on a free port once the machine is quiet,
    waited for until `GET /health/ready` answers 200: (the child, its base URL, how busy the
    machine was before it started). Stopped on the way out."""
    port = free_port()
    idle = await background_busy(wait_quiet_s)
    say(f"run {index} {side}: starting on port {port}")
    child = await spawn(port)
    try:
        base = f"http://127.0.0.1:{port}"
        ready_s = await wait_ready(child, f"{base}/health/ready", ready_timeout_s)
        say(f"run {index} {side}: ready {ready_s:.2f} s after spawn")
        yield child, base, idle
    finally:
        status, seconds = await child.stop()
        say(f"run {index} {side}: stopped (exit status {status}, {seconds:.2f} s after SIGTERM)")
