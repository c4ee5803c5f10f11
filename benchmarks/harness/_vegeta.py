"""Open-loop HTTP load made by vegeta (github.com/tsenart/vegeta, Go): requests at a fixed rate
from a file of targets, whatever the answers do, each one's result kept for the figures.

Why not the Python driver (`_openloop_driver.py`): it costs some 100 µs of CPU a request, so at
thousands of requests a second it takes from a 2-core box the core the server under test needs,
falls behind its timetable ("driver saturated") and ends up measuring itself. vegeta sends the
same requests for a small fraction of that (its CPU seconds are reported beside the server's).

What is measured, from vegeta's per-request results (`vegeta attack -output`, then `vegeta
encode --to csv`; vegeta's own summary is not used):

- the schedule: vegeta's constant pacer gives request n (its `seq`, from 0) the slot
  began + (n + 1) x interval, interval = 1 s // rate in whole nanoseconds; a result's timestamp
  is when a worker actually took it. `began` is not in the results: it is taken as the earliest
  timestamp minus its slot's offset, so the send lags are relative to the request sent most on
  time (vegeta takes `began` just before its first slot, so this is within microseconds).
- the send lag of every request (its timestamp minus its slot): vegeta starts a worker whenever
  every worker is busy, up to `max_workers`, so it keeps its schedule unless it is short of CPU
  ("vegeta late") or of workers, every one waiting for an answer ("server behind": the server
  cannot keep up with the rate). A run whose worst lag is above `LAG_LIMIT_MS`, or that did not
  send every request of its schedule (vegeta stops at the end of the duration, however far
  behind), is flagged as not open loop; the requests not sent count as errors.
- latencies timed from the slot (lag + vegeta's latency, which runs from the actual send), so
  that a lagging generator shows in the figures instead of thinning the load out (no
  coordinated omission); quantiles over the 2xx answers, nearest rank, as the Python driver's.
- errors: every result that is not a 2xx (another status, a timeout, a refused connection), and
  the requests of the schedule never sent.

The warm-up is an attack of its own at the same rate just before (not measured, counted for
the records a server wrote). vegeta is found on PATH, else in the cache directory, else
installed there with `go install` (once).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import csv
import json
import os
import random
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness._console import say
from harness._machine import busy_between, cpu_jiffies
from harness._openloop_driver import increment_bodies, quantiles_ms
from harness._process import Child, child_env

MODULE = "github.com/tsenart/vegeta/v12"
VERSION = "v12.13.0"
# sends later than this behind their slot: the load was not the rate asked for
LAG_LIMIT_MS = 5.0
# the bodies of a targets file, at most (vegeta reads the whole file before the first request)
TARGET_BYTES = 16 * 1024 * 1024
_NPROC = len(os.sched_getaffinity(0))


def cache_bin() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distcount" / "bin"


def find_vegeta() -> str:
    """The vegeta to run: on PATH, else in `cache_bin()`, else installed there by `go install`
    (some 30 s, once). Exits with a message if there is neither vegeta nor Go."""
    found = shutil.which("vegeta")
    if found:
        return found
    cached = cache_bin() / "vegeta"
    if os.access(cached, os.X_OK):
        return str(cached)
    # Go's own install puts it there, not always on PATH
    go = shutil.which("go") or shutil.which("/usr/local/go/bin/go")
    if go is None:
        raise SystemExit(
            f"vegeta is not on PATH and Go is not installed: install Go, or put vegeta on PATH "
            f"(`go install {MODULE}@{VERSION}`)"
        )
    say(f"installing vegeta: go install {MODULE}@{VERSION} into {cached.parent} (once, ~30 s)")
    cached.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"],
        env={**os.environ, "GOBIN": str(cached.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not os.access(cached, os.X_OK):
        raise SystemExit(
            f"`go install {MODULE}@{VERSION}` failed (status {done.returncode}): install Go, or "
            f"put vegeta on PATH\n{done.stdout}{done.stderr}"
        )
    return str(cached)


def write_targets(path: Path, url: str, *, keys: int, batch: int, count: int, seed: int = 1) -> int:
    """A targets file of `vegeta attack -format=json`: POSTs of increments to `url`, bodies as
    the Python driver's `post` mode makes them (one increment on a random key of `keys`, or
    `batch` increments on distinct consecutive keys from a random one). vegeta goes round the
    file, so it holds `count` distinct bodies, fewer if they would exceed `TARGET_BYTES`.
    Returns how many it holds."""
    body = increment_bodies(keys, batch, random.Random(seed))
    first = body()
    count = max(1, min(count, TARGET_BYTES // len(first)))
    header = {"Content-Type": ["application/json"]}

    def line(raw: bytes) -> str:
        encoded = base64.b64encode(raw).decode()
        return json.dumps({"method": "POST", "url": url, "body": encoded, "header": header})

    with path.open("w", encoding="utf-8") as out:
        out.write(line(first) + "\n")
        for _ in range(count - 1):
            out.write(line(body()) + "\n")
    return count


@dataclass(frozen=True)
class Load:
    """One open-loop load: `rate` requests a second for `duration_s`, after a warm-up of
    `warmup_s` at the same rate (not measured)."""

    label: str  # how the report names it: "POST /increment (single, 80%)"
    rate: float  # as asked; vegeta is given it rounded to a whole number a second
    duration_s: float
    warmup_s: float
    timeout_s: float = 10.0  # per request: past it, an error
    workers: int = 32  # started at once; more are started while every one is busy
    max_workers: int = 1024  # requests in flight at most: beyond, vegeta falls behind

    @property
    def attack_rate(self) -> int:
        return max(1, round(self.rate))

    def argv(self, vegeta: str, targets: Path, output: Path, duration_s: float) -> list[str]:
        return [
            vegeta,
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-rate={self.attack_rate}/s",
            f"-duration={round(duration_s * 1000)}ms",
            f"-timeout={round(self.timeout_s * 1000)}ms",
            f"-workers={self.workers}",
            f"-max-workers={self.max_workers}",
            "-keepalive=true",
            "-http2=false",
            "-max-body=0",  # answers' bodies are not kept: smaller results, less CPU
            f"-output={output}",
        ]


@dataclass
class VegetaRun:
    """One load against one server: the measured phase's figures (see `figures`), the
    warm-up's, and what vegeta, the server and the machine spent during the measured phase."""

    side: str
    index: int
    load: Load
    result: dict[str, Any]
    warmup: dict[str, Any]
    vegeta_cpu_s: float
    server_cpu_s: float | None
    machine_busy: float | None
    window_s: float  # the measured phase, vegeta's start to exit
    background_busy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def latency(self, q: str) -> float:
        """A latency figure in milliseconds from the slot: "p50", "p99", "max", ..."""
        lat = self.result["latency_ms"]
        return float("nan") if lat is None else float(lat[q])

    @property
    def failures(self) -> int:
        """Requests that failed, warm-up included."""
        return int(self.result["errors"] + self.warmup["errors"])

    @property
    def open_loop(self) -> bool:
        """Whether vegeta kept its schedule in the measured phase (the warm-up's lag is logged:
        an attack's first milliseconds, connections being opened, may lag a little)."""
        return bool(self.result["kept_schedule"])

    @property
    def others_busy(self) -> float | None:
        """The share of all cores busy during the measured phase with neither the server nor
        vegeta: PostgreSQL, Kafka, and whatever else runs on the machine."""
        busy, span = self.machine_busy, self.window_s
        if busy is None or self.server_cpu_s is None or span <= 0:
            return None
        return max(0.0, busy - (self.server_cpu_s + self.vegeta_cpu_s) / (span * _NPROC))

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "failures": self.failures,
            "open_loop": self.open_loop,
            "others_busy": self.others_busy,
        }


_NOT_SENT = "not sent (vegeta behind its schedule)"


def figures(csv_path: Path, rate: int, duration_s: float, max_workers: int) -> dict[str, Any]:
    """The figures of one attack from its results (`vegeta encode --to csv`): see the module's
    docstring for the schedule, the lags and the latencies.

    A request of the schedule that vegeta never sent counts as an error, as the Python driver
    counted the requests it could not send: vegeta stops at the end of the duration, so an
    attack that lags sends fewer. Only slots up to `LAG_LIMIT_MS` before the end count: a run
    within the limit may miss the last few (and vegeta's stop makes the last one uncertain).

    Why vegeta lagged: with `max_workers` requests in flight it cannot send another, the server
    fell behind the rate ("server behind"); with fewer, vegeta itself was late, short of CPU on
    a shared box ("vegeta late")."""
    interval_ns = 1_000_000_000 // rate
    rows: list[tuple[int, int, int, int, str]] = []  # seq, timestamp, code, latency, error
    with csv_path.open(newline="", encoding="utf-8") as f:
        for r in csv.reader(f):
            rows.append((int(r[8]), int(r[0]), int(r[1]), int(r[2]), r[5]))
    # slots began + (n + 1) x interval up to LAG_LIMIT_MS before the end of the duration: sent
    # by an attack that keeps within the limit
    expected = max(0, int((duration_s * 1e9 - LAG_LIMIT_MS * 1e6) // interval_ns))
    unsent = max(0, expected - len(rows))
    outcomes: collections.Counter[str] = collections.Counter()
    if unsent:
        outcomes[_NOT_SENT] = unsent
    began = min((ts - (seq + 1) * interval_ns for seq, ts, *_ in rows), default=0)
    lags_s: list[float] = []
    latencies_s: list[float] = []
    first_failure: str | None = None
    last_done = began
    events: list[tuple[int, int]] = []  # (time, +1 sent / -1 done): requests in flight
    for seq, ts, code, latency, error in rows:
        lag = ts - began - (seq + 1) * interval_ns
        lags_s.append(lag / 1e9)
        last_done = max(last_done, ts + latency)
        events += ((ts, 1), (ts + latency, -1))
        if 200 <= code < 300 and not error:
            latencies_s.append((lag + latency) / 1e9)
            outcomes[str(code)] += 1
            continue
        # a timeout or a refused connection has no status: name it by the end of its error
        outcomes[str(code) if code else error.rsplit(": ", 1)[-1][:80]] += 1
        if first_failure is None:
            first_failure = f"{code or 'no answer'}: {error}"
    in_flight = peak = 0
    for _, step in sorted(events):  # at a tie, a request done (-1) before one sent
        in_flight += step
        peak = max(peak, in_flight)
    span_s = (last_done - began) / 1e9
    lag_ms = quantiles_ms(lags_s)
    kept = lag_ms is not None and lag_ms["max"] <= LAG_LIMIT_MS and not unsent
    return {
        "expected": expected,
        "sent": len(rows),
        "not_sent": unsent,
        "answered_2xx": len(latencies_s),
        "errors": unsent + len(rows) - len(latencies_s),
        "outcomes": dict(outcomes),
        "first_failure": first_failure or (_NOT_SENT if unsent else None),
        "span_s": span_s,
        "achieved_per_s": len(latencies_s) / span_s if span_s > 0 else 0.0,
        "latency_ms": quantiles_ms(latencies_s),
        "send_lag_ms": lag_ms,
        "peak_in_flight": peak,
        "kept_schedule": kept,
        "behind": None if kept else "server behind" if peak >= max_workers else "vegeta late",
    }


async def attack(
    vegeta: str,
    load: Load,
    targets: Path,
    duration_s: float,
    out: Path,
    *,
    log: Path,
    server: Child | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One `vegeta attack` of `duration_s` at `load`'s rate: (its figures, what it cost:
    vegeta's CPU seconds, the server's, the machine's busy share and the window in seconds)."""
    bin_path, csv_path = out.with_suffix(".bin"), out.with_suffix(".csv")
    # vegeta's CPU time: what this process's reaped children gained over the attack (nothing
    # else is started or reaped meanwhile); /proc cannot tell it once vegeta has exited
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = server.cpu_seconds() if server is not None else None
    jiffies, started = cpu_jiffies(), time.monotonic()
    child = await Child.spawn(
        "vegeta attack", load.argv(vegeta, targets, bin_path, duration_s), child_env({}), log
    )
    try:
        status = await asyncio.wait_for(child.process.wait(), duration_s + load.timeout_s + 60)
    finally:
        await child.stop()
    server_after = server.cpu_seconds() if server is not None else None
    busy = busy_between(jiffies, cpu_jiffies())
    window_s = time.monotonic() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if status != 0:
        raise child.exited()
    encode = await asyncio.create_subprocess_exec(
        vegeta, "encode", "--to", "csv", "--output", str(csv_path), str(bin_path),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await encode.communicate()
    if encode.returncode != 0:
        raise RuntimeError(f"vegeta encode failed ({encode.returncode}): {err.decode()[:500]}")
    try:
        result = figures(csv_path, load.attack_rate, duration_s, load.max_workers)
    finally:
        # some 150 bytes a request: the figures are kept, the raw results are not
        for path in (bin_path, csv_path):
            with contextlib.suppress(OSError):
                path.unlink()
    cost = {
        "vegeta_cpu_s": (children_after.ru_utime - children_before.ru_utime)
        + (children_after.ru_stime - children_before.ru_stime),
        "server_cpu_s": None
        if server_before is None or server_after is None
        else server_after - server_before,
        "machine_busy": busy,
        "window_s": window_s,
    }
    return result, cost


def _lag_text(result: dict[str, Any]) -> str:
    lag = result["send_lag_ms"]
    if lag is None:
        return "no request sent"
    kept = "kept its schedule" if result["kept_schedule"] else f"NOT open loop ({result['behind']})"
    return (
        f"send lag p99 {lag['p99']:.2f} ms, max {lag['max']:.2f} ms, "
        f"{result['peak_in_flight']:,} in flight at most, {result['not_sent']:,} not sent: {kept}"
    )


async def drive(
    side: str,
    index: int,
    load: Load,
    vegeta: str,
    targets: Path,
    *,
    log_dir: Path,
    server: Child | None = None,
) -> VegetaRun:
    """The warm-up, then the measured attack, against the URL of `targets`."""
    name = f"run{index}-{side}-{load.attack_rate}rps".replace(" ", "-")
    say(
        f"run {index} {side}: {load.label} at {load.attack_rate:,}/s for {load.duration_s:g} s "
        f"(after {load.warmup_s:g} s of warm-up), open loop (vegeta)"
    )
    warm: dict[str, Any] = {"answered_2xx": 0, "errors": 0, "kept_schedule": True}
    if load.warmup_s > 0:
        warm, warm_cost = await attack(
            vegeta,
            load,
            targets,
            load.warmup_s,
            log_dir / f"{name}-warmup",
            log=log_dir / f"{name}-warmup.log",
        )
        warm["vegeta_cpu_s"] = warm_cost["vegeta_cpu_s"]
        warm.pop("latency_ms", None)  # not measured
    result, cost = await attack(
        vegeta,
        load,
        targets,
        load.duration_s,
        log_dir / f"{name}-measured",
        log=log_dir / f"{name}-measured.log",
        server=server,
    )
    run = VegetaRun(side, index, load, result, warm, **cost)
    lat = result["latency_ms"] or {}
    nan = float("nan")
    say(
        f"run {index} {side}: {result['achieved_per_s']:,.0f}/s answered, p50 "
        f"{lat.get('p50', nan):.2f} ms, p99 {lat.get('p99', nan):.2f} ms, max "
        f"{lat.get('max', nan):.2f} ms; {run.failures:,} failed"
        + (f" (first: {result['first_failure']})" if result["first_failure"] else "")
        + f"; {_lag_text(result)}; vegeta {run.vegeta_cpu_s:.2f} s CPU, server "
        + (f"{run.server_cpu_s:.2f} s" if run.server_cpu_s is not None else "-")
    )
    if not warm["kept_schedule"]:
        say(f"run {index} {side}: warm-up {_lag_text(warm)}")
    return run
