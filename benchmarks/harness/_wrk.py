"""Closed-loop HTTP load with wrk: one increment per request, a random key each, against a
server started as a child process; what it answered, how fast, and what it cost.

When the server writes each accepted request somewhere countable (the ingress: a Kafka record),
`count_records` compares what was written with the 2xx answers wrk saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from harness._console import say
from harness._machine import background_busy, busy_between, cpu_jiffies
from harness._process import Child, free_port

_MARK = "WRK_JSON "

_LUA = """-- written by the benchmarks' harness: one single increment per request, random key
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  return wrk.format(nil, nil, nil, '{"key": "k' .. math.random(1, KEYS) .. '", "value": 1}')
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, '
    .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
    .. '"latency_us": {"min": %d, "max": %d, "mean": %.1f, "stdev": %.1f, '
    .. '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\\n',
    summary.duration, summary.requests, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


@dataclass(frozen=True)
class Wrk:
    """One wrk command line, and the Lua script every run of a benchmark shares."""

    threads: int
    connections: int
    duration_s: int
    warmup_s: int
    timeout_s: int
    keys: int
    script: Path
    ready_timeout_s: float  # wait this long for GET /health/ready
    wait_quiet_s: float  # and before that, this long at most for the machine to calm down

    @classmethod
    def from_args(cls, args: argparse.Namespace, log_dir: Path) -> Wrk:
        log_dir.mkdir(parents=True, exist_ok=True)
        script = log_dir / "increment.lua"
        script.write_text(_LUA.replace("KEYS", str(args.keys)), encoding="utf-8")
        return cls(
            args.threads,
            args.connections,
            args.duration,
            args.warmup,
            args.wrk_timeout_s,
            args.keys,
            script,
            args.ready_timeout_s,
            args.wait_quiet_s,
        )

    def describe(self) -> str:
        return f"wrk -t{self.threads} -c{self.connections} -d{self.duration_s}s"

    def settings(self) -> dict[str, Any]:
        return {
            "tool": "wrk",
            "threads": self.threads,
            "connections": self.connections,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "wrk_timeout_s": self.timeout_s,
            "keys": self.keys,
        }


def add_wrk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--duration", type=int, default=10, help="wrk -d, seconds")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each run")
    parser.add_argument("--wrk-timeout-s", type=int, default=10, help="wrk --timeout, seconds")
    parser.add_argument("--keys", type=int, default=10_000, help="keys drawn from k1..kN")
    parser.add_argument(
        "--ready-timeout-s", type=float, default=60.0, help="wait this long for /health/ready"
    )


def check_wrk_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors for the options of `add_wrk_options`; exits if wrk is missing."""
    if args.connections < args.threads:
        parser.error("wrk needs at least one connection per thread")
    if args.duration > 600 or args.warmup > 60:
        parser.error("--duration is bounded to 600 s and --warmup to 60 s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (Debian), then run this")


@dataclass
class LoadResult:
    side: str
    index: int
    requests: int
    non_2xx: int
    socket_errors: int  # connect + read + write + timeout
    duration_s: float
    latency_us: dict[str, float]
    server_cpu_s: float | None
    wrk_cpu_s: float
    machine_busy: float | None  # fraction of all cores busy during the load
    records_check: dict[str, Any] | None
    wrk_text: str
    background_busy: float | None = None  # machine busy before the server was started

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def server_cpu_us_per_request(self) -> float | None:
        cpu = self.server_cpu_s
        return None if cpu is None or not self.requests else cpu / self.requests * 1e6

    @property
    def consistent(self) -> bool:
        return self.records_check is not None and self.records_check["consistent"]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_s": self.requests_per_s, "answered_2xx": self.ok}


async def run_wrk(
    url: str, wrk: Wrk, duration_s: int
) -> tuple[dict[str, Any], str, float, float | None]:
    """(the Lua summary, wrk's text, wrk's CPU seconds, machine busy fraction)."""
    argv = [
        "wrk",
        f"-t{wrk.threads}",
        f"-c{wrk.connections}",
        f"-d{duration_s}s",
        f"--timeout={wrk.timeout_s}s",
        "--latency",
        "-s",
        str(wrk.script),
        url,
    ]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = cpu_jiffies()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), duration_s + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    busy_after = cpu_jiffies()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with status {process.returncode}:\n{text}")
    marked = [line for line in text.splitlines() if line.startswith(_MARK)]
    if not marked:
        raise RuntimeError(f"wrk printed no summary:\n{text}")
    summary: dict[str, Any] = json.loads(marked[-1].removeprefix(_MARK))
    wrk_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    return summary, text, wrk_cpu, busy_between(busy_before, busy_after)


async def wait_ready(child: Child, url: str, timeout_s: float) -> float:
    """Seconds from spawn until GET `url` answered 200."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not child.running():
                raise child.exited()
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(url)
                if response.status_code == 200:
                    return time.monotonic() - child.spawned_at
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{child.name} was not ready at {url} within {timeout_s:.0f} s")


async def load_server(
    side: str,
    index: int,
    child: Child,
    port: int,
    wrk: Wrk,
    *,
    count_records: Callable[[], Awaitable[int]] | None = None,
) -> LoadResult:
    """Wait for the server's GET /health/ready, warm it up, then load POST /increment."""
    base = f"http://127.0.0.1:{port}"
    ready_s = await wait_ready(child, f"{base}/health/ready", wrk.ready_timeout_s)
    say(f"run {index} {side}: ready {ready_s:.2f} s after spawn; warming up {wrk.warmup_s}s")
    if wrk.warmup_s > 0:
        await run_wrk(f"{base}/increment", wrk, wrk.warmup_s)
    before = await count_records() if count_records else None
    say(f"run {index} {side}: {wrk.describe()} POST /increment")
    cpu_before = child.cpu_seconds()
    summary, text, wrk_cpu, busy = await run_wrk(f"{base}/increment", wrk, wrk.duration_s)
    cpu_after = child.cpu_seconds()
    errors = summary["errors"]
    result = LoadResult(
        side=side,
        index=index,
        requests=summary["requests"],
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        duration_s=summary["duration_us"] / 1e6,
        latency_us=summary["latency_us"],
        server_cpu_s=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        wrk_cpu_s=wrk_cpu,
        machine_busy=busy,
        records_check=None,
        wrk_text=text,
    )
    if count_records is not None and before is not None:
        added = await count_records() - before
        extra = added - result.ok
        result.records_check = {
            "records_added": added,
            "answered_2xx": result.ok,
            "extra_records": extra,
            # never below 0: that would be a 202 without its record. Above 0 by at most the
            # requests in flight when wrk stopped (written, never counted by wrk) and the
            # non-2xx answers (a 503 may come for a record the broker still writes)
            "consistent": 0 <= extra <= wrk.connections + result.non_2xx,
        }
    lat = result.latency_us
    checked = result.records_check
    say(
        f"run {index} {side}: {result.requests_per_s:,.0f} requests/s, p50 "
        f"{lat['p50'] / 1000:.2f} ms, p99 {lat['p99'] / 1000:.2f} ms, "
        f"{result.non_2xx:,} non-2xx, {result.socket_errors:,} socket errors"
        + (f"; records added {checked['records_added']:,} for {result.ok:,} 2xx" if checked else "")
    )
    return result


async def serve_and_load(
    side: str,
    index: int,
    spawn: Callable[[int], Awaitable[Child]],
    wrk: Wrk,
    count_records: Callable[[], Awaitable[int]] | None = None,
) -> LoadResult:
    """One run of one side: a server started afresh by `spawn(port)` on a free port, once the
    machine is quiet, loaded by `load_server`, then stopped."""
    port = free_port()
    idle = await background_busy(wrk.wait_quiet_s)
    say(f"run {index} {side}: starting on port {port}")
    child = await spawn(port)
    try:
        result = await load_server(side, index, child, port, wrk, count_records=count_records)
        result.background_busy = idle
        return result
    finally:
        status, seconds = await child.stop()
        say(f"run {index} {side}: stopped (exit status {status}, {seconds:.2f} s after SIGTERM)")
