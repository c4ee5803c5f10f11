"""An open-loop load driver, started as a child process by `_openloop.py`.

Requests leave on a fixed timetable (request i at start + i / rate), whatever the answers do, and
each is timed from the moment the timetable gave it, not from when it was actually sent: a slow
answer, or a driver that fell behind, shows in the latencies instead of thinning the load out
(no coordinated omission). How late the driver itself sent each request is kept apart ("send
lag") so that its own share can be read off.

Modes (the spec's `mode`):

- `http`: `GET <target>` over raw HTTP/1.1 keep-alive connections (asyncio streams), a pool
  that grows while every connection is busy. `{n}` in the target is a key index drawn at random
  from range(keys) for each request.
- `post`: `POST <target>` over the same connections, a JSON body of increments of 1
  (`application/json`): with `batch` 0, one increment `{"key": "k<n>", "value": 1}`, n drawn at
  random from range(keys); with `batch` N, `{"increments": [...]}` of N increments on the keys
  `k<s>`, `k<s+1>`, ... (modulo keys) from a random s: distinct keys, so that a server that sums a
  batch by key (the ingress) writes one record per increment as any other does.
- `client`: `distcount_client.AsyncClient.get_counter_value(<target with {n}>)`, httpx
  underneath, no retries: the client's own cost is in the figure.
- `ryw`: read-your-writes through the client: `incr(<target><i>, v)` on a key of its own per
  operation, then `get_counter_value(key, after=<its token>)`, timed from the timetable to the
  read's answer; the answer must be complete and hold exactly v.

At most `max_in_flight` requests are in flight: one due beyond that is not sent and counts as an
error ("not sent (driver saturated)"), so that a driver that cannot keep up says so instead of
queueing without bound (httpx's pool, for one, gets slower the more requests wait in it).

Checks (`check`): `status` wants a 2xx; `counter` also wants a counter's answer whose value is
n + 1 for the key of index n (as benchmarks/reads.py fills its totals) and whose as_of is set.

It imports nothing of the harness (it runs as a script). Input: `--spec <json>`. Output lines:
`warming up`, `measuring` (the measured phase starts now: the parent reads the server's CPU time
then), `progress <label> <done>/<total>` every few seconds, and `done <json>` with the figures;
every latency and send lag of the measured phase goes to the file `raw_out` names (JSON), so that
the parent can merge the figures of several drivers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import random
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import uvloop

from distcount_client import AsyncClient, Retry

_PROGRESS_EVERY_S = 5.0
# an idle connection older than this is not used again (servers close them after a while)
_IDLE_S = 2.0
_SATURATED = "not sent (driver saturated)"
Op = Callable[[float, "Tally"], Coroutine[Any, Any, None]]


@dataclass
class Tally:
    """What one phase measured: latencies from the timetable, send lags, outcomes."""

    latencies_s: list[float] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)
    parts_s: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: int = 0  # no answer, or not a 2xx
    check_failures: int = 0
    first_failure: str | None = None
    last_done: float = 0.0

    def done(self, at: float, outcome: str) -> None:
        now = time.monotonic()
        self.latencies_s.append(now - at)
        self.outcomes[outcome] += 1
        self.last_done = max(self.last_done, now)

    def failed(self, at: float, outcome: str, detail: str) -> None:
        """An error (no answer, or not a 2xx): counted, its latency left out."""
        self.errors += 1
        self.outcomes[outcome] += 1
        self.last_done = max(self.last_done, time.monotonic())
        if self.first_failure is None:
            self.first_failure = detail

    def wrong(self, detail: str) -> None:
        """An answer that came but did not say what it should."""
        self.check_failures += 1
        if self.first_failure is None:
            self.first_failure = detail


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one server; answers framed by Content-Length.

    The most recently used idle connection is taken first. One idle for longer than
    `_IDLE_S`, or that the server has closed, is dropped instead: servers close idle
    connections (uvicorn after 5 s), and a request sent on one as it closes would fail for a
    reason of the driver's making."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._request_head = b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        self.opened = 0

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.request(b"GET " + path.encode() + self._request_head + b"\r\n")

    async def post_json(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = b"POST " + path.encode() + self._request_head
        length = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        return await self.request(head + length + body)

    async def request(self, request: bytes) -> tuple[int, bytes]:
        """Send a whole request (head and body); (status, body) of the answer."""
        reader, writer = await self._connection()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = _framing(head)
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status, body

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, since = self._idle.pop()
            if not reader.at_eof() and time.monotonic() - since < _IDLE_S:
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(self._host, self._port)

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()


def _framing(head: bytes) -> tuple[int, bool]:
    """(Content-Length, whether the server closes the connection) of a response head."""
    length: int | None = None
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
        elif name == b"transfer-encoding":
            raise ValueError("chunked answers are not read by this driver")
    if length is None:
        raise ValueError("an answer without Content-Length")
    return length, close


def _check_counter(data: Any, n: int) -> str | None:
    """Why a counter's answer for the key of index `n` is wrong, or None."""
    if not isinstance(data, dict) or data.get("value") != n + 1:
        return f"key index {n}: expected value {n + 1}, got {str(data)[:200]}"
    if data.get("as_of") is None:
        return f"key index {n}: no as_of in {str(data)[:200]}"
    return None


def http_op(spec: dict[str, Any], pool: HttpPool, rng: random.Random) -> Op:
    target, keys, check = spec["target"], spec["keys"], spec["check"]
    timeout_s = spec["timeout_s"]

    async def op(at: float, tally: Tally) -> None:
        n = rng.randrange(keys)
        try:
            async with asyncio.timeout(timeout_s):
                status, body = await pool.get(target.replace("{n}", str(n)))
        except Exception as exc:
            tally.failed(at, type(exc).__name__, f"GET {target}: {type(exc).__name__}: {exc}")
            return
        if not 200 <= status < 300:
            tally.failed(at, str(status), f"GET {target}: {status} {body[:200]!r}")
            return
        tally.done(at, str(status))
        if check == "counter" and (wrong := _check_counter(orjson.loads(body)["data"], n)):
            tally.wrong(wrong)

    return op


def increment_bodies(keys: int, batch: int, rng: random.Random) -> Callable[[], bytes]:
    """A function giving the next request's body in `post` mode (see the module's docstring)."""
    items = [b'{"key":"k%d","value":1}' % n for n in range(keys)]
    if batch == 0:
        return lambda: items[rng.randrange(keys)]
    if batch > keys:
        raise ValueError(f"a batch of {batch} needs at least as many keys, not {keys}")
    doubled = items + items[:batch]  # so that a run of keys wraps around without a test

    def body() -> bytes:
        start = rng.randrange(keys)
        return b'{"increments":[' + b",".join(doubled[start : start + batch]) + b"]}"

    return body


def post_op(spec: dict[str, Any], pool: HttpPool, rng: random.Random) -> Op:
    target, timeout_s = spec["target"], spec["timeout_s"]
    body = increment_bodies(spec["keys"], spec["batch"], rng)

    async def op(at: float, tally: Tally) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                status, answer = await pool.post_json(target, body())
        except Exception as exc:
            tally.failed(at, type(exc).__name__, f"POST {target}: {type(exc).__name__}: {exc}")
            return
        if not 200 <= status < 300:
            tally.failed(at, str(status), f"POST {target}: {status} {answer[:200]!r}")
            return
        tally.done(at, str(status))

    return op


def client_op(spec: dict[str, Any], client: AsyncClient, rng: random.Random) -> Op:
    target, keys, check = spec["target"], spec["keys"], spec["check"]
    timeout_s = spec["timeout_s"]

    async def op(at: float, tally: Tally) -> None:
        n = rng.randrange(keys)
        try:
            async with asyncio.timeout(timeout_s):
                counter = await client.get_counter_value(target.replace("{n}", str(n)))
        except Exception as exc:
            tally.failed(at, type(exc).__name__, f"get_counter_value: {type(exc).__name__}: {exc}")
            return
        tally.done(at, "ok")
        if check == "counter":
            data = {"value": counter.value, "as_of": counter.as_of}
            if wrong := _check_counter(data, n):
                tally.wrong(wrong)

    return op


@dataclass
class Sent:
    """What the read-your-writes operations sent: the parent checks the totals against it."""

    operations: int = 0
    value: int = 0
    accepted: int = 0  # answered 202
    accepted_value: int = 0


def ryw_op(spec: dict[str, Any], client: AsyncClient, sent: Sent) -> Op:
    prefix, timeout_s = spec["target"], spec["timeout_s"]

    async def op(at: float, tally: Tally) -> None:
        i = sent.operations
        key, value = f"{prefix}{i}", i % 9 + 1
        sent.operations += 1
        sent.value += value
        try:
            async with asyncio.timeout(timeout_s):
                written = await client.incr(key, value)
                sent.accepted += 1
                sent.accepted_value += value
                posted = time.monotonic()
                counter = await client.get_counter_value(key, after=written.token)
        except Exception as exc:
            tally.failed(at, type(exc).__name__, f"{key}: {type(exc).__name__}: {exc}")
            return
        tally.done(at, "ok")
        tally.parts_s["post"].append(posted - at)
        tally.parts_s["wait"].append(time.monotonic() - posted)
        if not counter.complete or counter.value != value:
            tally.wrong(f"{key}: wrote {value}, read {counter.value} (complete={counter.complete})")

    return op


async def phase(op: Op, rate: float, duration_s: float, max_in_flight: int, label: str) -> Tally:
    """Run `op` on the timetable for `duration_s`, then wait for the stragglers. A request due
    while `max_in_flight` are unanswered is not sent, and counts as an error: the driver (or the
    client it drives) cannot keep up, and queueing without bound would only make it slower.

    The timetable is kept by a thread of its own, which sleeps with the system clock's
    resolution and hands each request to the event loop as its time comes: the event loop's
    timers have a resolution of a millisecond, which alone would send requests up to a
    millisecond late, as much as the answers being measured take."""
    tally = Tally()
    total = max(1, round(rate * duration_s))
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    start = time.monotonic() + 0.05
    next_progress = start + _PROGRESS_EVERY_S

    def fire(i: int, at: float) -> None:
        nonlocal next_progress
        now = time.monotonic()
        tally.lags_s.append(now - at)
        if len(pending) >= max_in_flight:
            tally.failed(at, _SATURATED, f"{max_in_flight} requests in flight: {_SATURATED}")
            return
        task = loop.create_task(op(at, tally))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if now >= next_progress:
            print(f"progress {label} {i}/{total}", flush=True)
            next_progress = now + _PROGRESS_EVERY_S

    def timetable() -> None:
        for i in range(total):
            at = start + i / rate
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            loop.call_soon_threadsafe(fire, i, at)
        loop.call_soon_threadsafe(finished.set_result, None)

    threading.Thread(target=timetable, name="timetable", daemon=True).start()
    await finished
    if pending:
        await asyncio.wait(pending)
    tally.last_done = max(tally.last_done, start)
    return tally


def quantiles_ms(values_s: list[float]) -> dict[str, float] | None:
    """min, p50, p90, p99, p99.9, max and mean in milliseconds (nearest rank), None if empty."""
    if not values_s:
        return None
    ordered = sorted(values_s)

    def rank(q: float) -> float:  # the smallest value with at least a share q at or below it
        return ordered[max(0, math.ceil(q * len(ordered) - 1e-9) - 1)]

    return {
        "min": ordered[0] * 1000,
        "p50": rank(0.50) * 1000,
        "p90": rank(0.90) * 1000,
        "p99": rank(0.99) * 1000,
        "p999": rank(0.999) * 1000,
        "max": ordered[-1] * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
    }


async def drive(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the figures of the measured phase, its every latency and send lag in seconds)."""
    rng = random.Random(spec["seed"])
    url = urlsplit(spec["base_url"])
    pool = HttpPool(url.hostname or "127.0.0.1", url.port or 80)
    limits = httpx.Limits(
        max_connections=spec["max_in_flight"],
        max_keepalive_connections=spec["max_in_flight"],
        keepalive_expiry=_IDLE_S,
    )
    http = httpx.AsyncClient(limits=limits)
    client = AsyncClient(
        spec["base_url"], timeout_s=spec["timeout_s"], retry=Retry(attempts=1), http=http
    )
    sent = Sent()
    ops: dict[str, Callable[[], Op]] = {
        "http": lambda: http_op(spec, pool, rng),
        "post": lambda: post_op(spec, pool, rng),
        "client": lambda: client_op(spec, client, rng),
        "ryw": lambda: ryw_op(spec, client, sent),
    }
    op = ops[spec["mode"]]()
    in_flight = spec["max_in_flight"]
    try:
        if spec["warmup_s"] > 0:
            print("warming up", flush=True)
            warm = await phase(op, spec["rate"], spec["warmup_s"], in_flight, "warm-up")
        else:
            warm = Tally()
        print("measuring", flush=True)
        cpu = time.process_time()
        started = time.monotonic()
        tally = await phase(op, spec["rate"], spec["duration_s"], in_flight, "measured")
        cpu_s = time.process_time() - cpu
    finally:
        pool.close()
        await http.aclose()
    span_s = tally.last_done - started
    answered = len(tally.latencies_s)
    raw = {"latencies_s": tally.latencies_s, "lags_s": tally.lags_s, "parts_s": tally.parts_s}
    figures = {
        "mode": spec["mode"],
        "scheduled": len(tally.lags_s),
        "answered_2xx": answered,
        "errors": tally.errors,
        "outcomes": dict(tally.outcomes),
        "check_failures": tally.check_failures,
        "warmup_check_failures": warm.check_failures,
        "warmup_errors": warm.errors,
        "warmup_answered_2xx": len(warm.latencies_s),
        "first_failure": tally.first_failure or warm.first_failure,
        "span_s": span_s,
        "achieved_per_s": answered / span_s if span_s > 0 else 0.0,
        "latency_ms": quantiles_ms(tally.latencies_s),
        "send_lag_ms": quantiles_ms(tally.lags_s),
        "parts_ms": {name: quantiles_ms(values) for name, values in tally.parts_s.items()},
        "driver_cpu_s": cpu_s,
        "connections_opened": pool.opened,
        "sent": vars(sent) if spec["mode"] == "ryw" else None,
    }
    return figures, raw


def main() -> None:
    # the timetable's thread needs the GIL to hand a request over: while the event loop is busy
    # it would wait up to the default switch interval (5 ms) for it
    sys.setswitchinterval(0.0005)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="the load, as JSON (see _openloop.py)")
    spec = json.loads(parser.parse_args().spec)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        figures, raw = runner.run(drive(spec))
    Path(spec["raw_out"]).write_text(json.dumps(raw), encoding="utf-8")
    print("done " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
