"""The two loads of benchmarks/end_to_end.py, each a child process of its own on uvloop, so that
neither the other nor the parent's work moves its timing.

- `steady`: `POST /increment` at a fixed rate over many keys, open loop (request i leaves at
  start + i / rate whatever the answers do, and is timed from that moment), until SIGTERM.
  Every key's accepted sum goes to `raw_out`, for the check against PostgreSQL.
- `probes`: at a fixed rate for `duration_s`, each probe on a key of its own: `POST
  /increment`, then `GET /counters/{key}` (no `?after=`) every `poll_ms` until the answer holds
  the probe's value. Every probe's timings go to `raw_out`.

Both speak keep-alive HTTP/1.1 over asyncio streams (httpx costs about 1 ms of CPU a call, far
more than the ingress spends on one). It imports nothing of the harness (it runs as a script).
Input: `--spec <json>`. Output lines: `started`, `progress ...` every few seconds, `done <json>`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop

_PROGRESS_EVERY_S = 10.0
# an idle connection older than this is not used again: uvicorn closes them after 5 s, and a
# POST sent on one as it closes would leave its outcome unknown
_IDLE_S = 2.0


class Http:
    """Keep-alive HTTP/1.1 connections to one server, a pool that grows while all are busy.
    Answers must carry a Content-Length (uvicorn's JSON answers do)."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        reader, writer = await self._connection()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            writer.write(head.encode() + b"\r\n" + body)
            header = await reader.readuntil(b"\r\n\r\n")
            lines = header.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            payload = await reader.readexactly(int(fields["content-length"]))
        except BaseException:
            writer.close()
            raise
        if fields.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status, payload

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < _IDLE_S and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(self._host, self._port)

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


def quantiles_ms(values_s: list[float]) -> dict[str, float] | None:
    """p50, p90, p99 and max in milliseconds (nearest rank), None if empty."""
    if not values_s:
        return None
    ordered = sorted(values_s)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered) - 1e-9) - 1)] * 1000

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": ordered[-1] * 1000}


def increment_body(key: str, value: int) -> bytes:
    return orjson.dumps({"key": key, "value": value})


# -- steady ------------------------------------------------------------------------------------


@dataclass
class Steady:
    """What the steady load sent and what was answered. `uncertain` holds, per key, the values of
    requests whose record may or may not be written: no answer (a timeout, a dropped
    connection) or a 5xx (the ingress answers 503 for a record whose delivery it could not
    confirm, which the broker may still have written)."""

    http: Http
    timeout_s: float
    accepted: collections.Counter[str] = field(default_factory=collections.Counter)
    uncertain: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_s: list[float] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)
    first_failure: str | None = None

    def failed(self, outcome: str, detail: str) -> None:
        self.statuses[outcome] += 1
        if self.first_failure is None:
            self.first_failure = detail

    async def send(self, due: float, key: str, value: int) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                status, body = await self.http.request(
                    "POST", "/increment", increment_body(key, value)
                )
        except Exception as exc:  # no answer: the record may or may not be written
            self.uncertain[key] += value
            self.failed(type(exc).__name__, f"{key}: {type(exc).__name__}: {exc}")
            return
        if status == 202:
            self.accepted[key] += value
            self.statuses["202"] += 1
            self.latencies_s.append(time.monotonic() - due)
            return
        if status >= 500:
            self.uncertain[key] += value
        self.failed(str(status), f"{key}: {status} {body[:200]!r}")


async def steady(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rate, keys, prefix = float(spec["rate"]), int(spec["keys"]), spec["prefix"]
    max_in_flight = int(spec["max_in_flight"])
    tally = Steady(Http(spec["base_url"]), float(spec["timeout_s"]))
    draw = random.Random(spec["seed"])
    stop = asyncio.Event()  # SIGTERM: stop sending, wait for the answers, report
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    in_flight: set[asyncio.Task[None]] = set()
    print("started", flush=True)
    cpu = time.process_time()
    started = time.monotonic()
    next_progress = started + _PROGRESS_EVERY_S
    i = 0
    while not stop.is_set() and time.monotonic() - started < spec["max_duration_s"]:
        now = time.monotonic()
        # every request due by now leaves now: the loop's timers have a 1 ms resolution
        while (due := started + i / rate) <= now:
            i += 1
            tally.lags_s.append(now - due)
            key, value = f"{prefix}{draw.randrange(keys)}", draw.randint(1, 9)
            if len(in_flight) >= max_in_flight:  # never sent: nothing of it can be written
                tally.failed("not sent", "not sent: the driver's in-flight bound was reached")
                continue
            task = asyncio.create_task(tally.send(due, key, value))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if now >= next_progress:
            print(f"progress {i:,} sent, {tally.statuses['202']:,} accepted", flush=True)
            next_progress += _PROGRESS_EVERY_S
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
    span_s = time.monotonic() - started
    if in_flight:
        await asyncio.wait(in_flight, timeout=tally.timeout_s + 5)
    cpu_s = time.process_time() - cpu
    tally.http.close()
    figures = {
        "scheduled": i,
        "accepted": tally.statuses["202"],
        "accepted_value": sum(tally.accepted.values()),
        "uncertain_value": sum(tally.uncertain.values()),
        "statuses": dict(tally.statuses),
        "first_failure": tally.first_failure,
        "span_s": span_s,
        "accepted_per_s": tally.statuses["202"] / span_s if span_s > 0 else 0.0,
        "latency_ms": quantiles_ms(tally.latencies_s),
        "send_lag_ms": quantiles_ms(tally.lags_s),
        "driver_cpu_s": cpu_s,
        "connections_opened": tally.http.opened,
    }
    return figures, {"accepted": dict(tally.accepted), "uncertain": dict(tally.uncertain)}


# -- probes ------------------------------------------------------------------------------------


@dataclass
class Probe:
    """One probe's timings, in seconds from just before its POST (`wall_s` is that moment in
    epoch seconds, to place it against the aggregator's flush ticks)."""

    index: int
    key: str
    value: int
    due: float  # time.monotonic() the timetable gave it
    wall_s: float = 0.0
    lag_s: float = 0.0  # how late the POST left against the timetable
    outcome: str = "pending"  # "visible", or why not
    post_s: float | None = None  # the POST's answer (202)
    visible_s: float | None = None  # the answer of the first GET that held the value
    last_miss_s: float | None = None  # the send of the last GET that did not
    hit_get_s: float | None = None  # the round trip of the GET that held it
    gets: int = 0
    detail: str | None = None

    def failed(self, outcome: str, detail: str) -> None:
        self.outcome, self.detail = outcome, detail


@dataclass
class Poller:
    http: Http
    poll_s: float
    timeout_s: float  # a probe not visible this long after its POST is given up
    gaps_s: list[float] = field(default_factory=list)  # one GET's send to the next's, per probe
    gets_s: list[float] = field(default_factory=list)  # GET round trips

    async def probe(self, p: Probe) -> None:
        started = time.monotonic()
        p.wall_s, p.lag_s = time.time(), started - p.due
        try:
            status, body = await self.http.request(
                "POST", "/increment", increment_body(p.key, p.value)
            )
        except Exception as exc:
            p.failed("POST failed", f"{type(exc).__name__}: {exc}")
            return
        p.post_s = time.monotonic() - started
        if status != 202:
            p.failed(f"POST {status}", body[:200].decode(errors="replace"))
            return
        await self._poll(p, started)

    async def _poll(self, p: Probe, started: float) -> None:
        """GET every poll_s (from one send to the next; at once if an answer took longer)
        until the answer holds the value."""
        path = f"/counters/{p.key}"
        next_at = time.monotonic()
        last_sent: float | None = None
        while p.outcome == "pending":
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            sent = time.monotonic()
            if last_sent is not None:
                self.gaps_s.append(sent - last_sent)
            last_sent = sent
            try:
                status, body = await self.http.request("GET", path)
            except Exception as exc:
                p.failed("GET failed", f"{type(exc).__name__}: {exc}")
                return
            answered = time.monotonic()
            self.gets_s.append(answered - sent)
            p.gets += 1
            if status == 200:
                value = orjson.loads(body)["data"]["value"]
                if value == p.value:
                    p.outcome = "visible"
                    p.visible_s, p.hit_get_s = answered - started, answered - sent
                else:
                    p.failed("wrong value", f"{value} != {p.value}")
            elif status != 404:  # 404: the key is not counted yet
                p.failed(f"GET {status}", body[:200].decode(errors="replace"))
            elif answered - started > self.timeout_s:
                p.last_miss_s = sent - started
                p.failed("never visible", f"not visible {self.timeout_s:.0f} s after the POST")
            else:
                p.last_miss_s = sent - started
                next_at = sent + self.poll_s


async def probes(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rate, duration_s, prefix = float(spec["rate"]), float(spec["duration_s"]), spec["prefix"]
    poller = Poller(Http(spec["base_url"]), spec["poll_ms"] / 1000, float(spec["timeout_s"]))
    count = max(1, round(rate * duration_s))
    sent: list[Probe] = []
    tasks: list[asyncio.Task[None]] = []
    print("started", flush=True)
    cpu = time.process_time()
    started = time.monotonic()
    next_progress = started + _PROGRESS_EVERY_S
    # Poisson arrivals at the mean rate: the probes then meet the flush ticks at every phase.
    # At a fixed rate that divides the interval (5 a second against 1 s ticks) they would
    # only ever sample the same few moments of it, and the quantiles would say where those fell.
    draw = random.Random(spec.get("seed", 1))
    due = started
    for i in range(count):
        due += draw.expovariate(rate)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        p = Probe(i, f"{prefix}{i}", i + 1, due)
        sent.append(p)
        tasks.append(asyncio.create_task(poller.probe(p)))
        if time.monotonic() >= next_progress:
            seen = sum(1 for q in sent if q.outcome == "visible")
            print(f"progress {i + 1:,}/{count:,} probes sent, {seen:,} seen", flush=True)
            next_progress += _PROGRESS_EVERY_S
    sending_s = time.monotonic() - started
    await asyncio.gather(*tasks)
    span_s = time.monotonic() - started
    cpu_s = time.process_time() - cpu
    poller.http.close()
    outcomes = collections.Counter(p.outcome for p in sent)
    figures = {
        "probes": count,
        "visible": outcomes["visible"],
        "outcomes": dict(outcomes),
        "first_failure": next((f"{p.key}: {p.detail}" for p in sent if p.detail), None),
        "sending_s": sending_s,
        "span_s": span_s,
        "gets": len(poller.gets_s),
        "gets_per_s": len(poller.gets_s) / span_s if span_s > 0 else 0.0,
        "poll_gap_ms": quantiles_ms(poller.gaps_s),
        "get_ms": quantiles_ms(poller.gets_s),
        "driver_cpu_s": cpu_s,
        "connections_opened": poller.http.opened,
    }
    return figures, {"probes": [vars(p) for p in sent]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="the load, as JSON (see end_to_end.py)")
    spec = json.loads(parser.parse_args().spec)
    work = steady if spec["mode"] == "steady" else probes
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        figures, raw = runner.run(work(spec))
    Path(spec["raw_out"]).write_text(json.dumps(raw), encoding="utf-8")
    print("done " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
