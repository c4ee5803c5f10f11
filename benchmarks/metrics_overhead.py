"""What the metrics cost on the two hot paths: metrics off against metrics on, in one process,
in the same run, interleaved.

- ingress: the real app of `distcount_ingress.create_app`, called as an ASGI app (no server, no
  socket) with `POST /increment` requests `{"key": "c<i mod keys>", "value": 1}`; its publisher
  acknowledges every record at once and its counter reader is never asked. requests/s.
- fold: the aggregator's per-fetch work: `metrics.on_fetched(partition, records)` then
  `distcount_aggregator.fold(...)` for each partition's share of a fetch of 5,000 real
  `aiokafka` consumer records, and every few fetches the metrics call of a committed flush
  (`metrics.on_flush(...)`, then `PartitionState.committed()`; no PostgreSQL). records/s.

"off" is `DISTCOUNT_METRICS=off`; "on" is the reporter chosen (DogStatsD by default, the costliest:
tags on every line) sending every `--interval-ms` to a UDP port on 127.0.0.1 read by a child
process, which also checks that what was sent adds up. Both sides build their hooks with
`distcount_metrics.ingress_metrics` / `aggregator_metrics` from settings read by
`distcount_config.load`, and the "on" side runs inside `metrics.reporting()`, ticking meanwhile.

R rounds per path, each an "off" run and an "on" run, interleaved: each run is cut into C chunks
run alternately (off 1, on 1, on 2, off 2, off 3, on 3, ...; starting with on in even rounds),
as this machine's speed drifts by tens of percent within seconds. A round where other processes
took CPU is run again. Each "on" chunk runs inside its own `metrics.reporting()`, so its ticks
and its last report are paid inside it. The headline per path is the median over all chunk
pairs of 1 - (off chunk time / on chunk time); the limit is 5 %.
`--null-test` runs metrics off on both sides: what it shows is the method's own noise and bias.

    .venv/bin/python benchmarks/metrics_overhead.py [--repeat 7] [--requests 50000]
        [--records 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import select
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from typing import Any

import orjson
import uvloop
from aiokafka.structs import ConsumerRecord

from _common import (
    PYTHON,
    QUIET_BELOW,
    background_busy,
    busy_between,
    cpu_jiffies,
    error_lines,
    failed_report,
    machine_facts,
    markdown_table,
    median,
    proc_cpu_seconds,
    say,
    utc_stamp,
    write_report,
)
from distcount_aggregator import MAX_RECORDS_PER_FETCH, PartitionState, fold
from distcount_codec import Increment, encode_record
from distcount_config import Settings, load
from distcount_ingress import collect_garbage_rarely, create_app
from distcount_metrics import (
    AggregatorMetrics,
    IngressMetrics,
    Metric,
    aggregator_metrics,
    ingress_metrics,
)
from distcount_metrics import _catalog as m

LIMIT_PCT = 5.0
PATHS = ("ingress", "fold")
# the duration every simulated flush reports (no PostgreSQL here)
FLUSH_DURATION_S = 0.01


# -- the datagram drain (a child process: the StatsD daemon's part is not the service's cost) -----


def drain_main() -> None:
    """Bind a UDP port on 127.0.0.1, print it, and read every datagram sent to it. Each line
    "report" on stdin answers one JSON line: what arrived since the previous answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    tally = _Tally()
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sock in ready:
            tally.drain(sock)
        if sys.stdin in ready:
            if not sys.stdin.readline():
                return
            tally.drain(sock)  # whatever was sent before the question is in the buffer by now
            print(json.dumps(tally.take()), flush=True)


class _Tally:
    """Datagrams are only kept as they arrive, and read when asked: while the "on" side runs,
    the drain takes as little CPU as it can from the machine it shares."""

    def __init__(self) -> None:
        self._data = self._empty()
        self._datagrams: list[bytes] = []

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {
            "datagrams": 0,
            "bytes": 0,
            "lines": 0,
            "counters": {},  # "name|#tags" -> sum
            "timer_lines": {},  # "name" -> lines
            "gauge_lines": {},  # "name" -> lines
        }

    def take(self) -> dict[str, Any]:
        data = self._data
        for datagram in self._datagrams:
            data["datagrams"] += 1
            data["bytes"] += len(datagram)
            for line in datagram.decode().split("\n"):
                if line:
                    self._line(line)
        self._data, self._datagrams = self._empty(), []
        return data

    def drain(self, sock: socket.socket) -> None:
        while True:
            try:
                self._datagrams.append(sock.recv(65536))
            except BlockingIOError:
                return

    def _line(self, line: str) -> None:
        data = self._data
        data["lines"] += 1
        head, _, rest = line.partition("|")
        name, _, value = head.rpartition(":")
        fields = rest.split("|")
        kind = fields[0]
        tags = next((f[1:] for f in fields[1:] if f.startswith("#")), "")
        if kind == "c":
            key = f"{name}|#{tags}" if tags else name
            data["counters"][key] = data["counters"].get(key, 0) + int(value)
        elif kind == "ms":
            data["timer_lines"][name] = data["timer_lines"].get(name, 0) + 1
        elif kind == "g":
            data["gauge_lines"][name] = data["gauge_lines"].get(name, 0) + 1


def counted(tally: dict[str, Any], metric: Metric, values: Sequence[object] = ()) -> int:
    """The sum a counter reached in `tally`, for the tag values given (StatsD or DogStatsD)."""
    plain = ".".join([metric.full_name, *(str(v) for v in values)])
    wanted = {f"{k}:{v}" for k, v in zip(metric.tags, values, strict=True)}
    total = 0
    for key, value in tally.get("counters", {}).items():
        name, _, tags = key.partition("|#")
        if name == plain or (name == metric.full_name and wanted <= set(tags.split(","))):
            total += value
    return total


class Drain:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls) -> Drain:
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            __file__,
            "--drain",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the datagram drain did not start: {line!r}")
        return cls(process, int(line.split()[1]))

    async def take(self) -> dict[str, Any]:
        """What arrived since the last call."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"report\n")
        await self.process.stdin.drain()
        taken: dict[str, Any] = json.loads(
            await asyncio.wait_for(self.process.stdout.readline(), 30)
        )
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


# -- settings -------------------------------------------------------------------------------------


def settings_for(side: str, args: argparse.Namespace, port: int) -> Settings:
    """The settings `distcount_config.load` reads from these variables (and no others)."""
    env = {
        "DISTCOUNT_METRICS": "off" if side == "off" or args.null_test else args.reporter,
        "DISTCOUNT_STATSD_HOST": "127.0.0.1",
        "DISTCOUNT_STATSD_PORT": str(port),
        "DISTCOUNT_METRICS_INTERVAL_MS": str(args.interval_ms),
        "DISTCOUNT_METRICS_SAMPLE_RATE": str(args.sample_rate),
        "DISTCOUNT_METRICS_TAGS": args.tags,
        "DISTCOUNT_BUCKET_MS": str(args.bucket_ms),
    }
    return load(env)


# -- one measured run -----------------------------------------------------------------------------


@dataclass
class RunResult:
    """One side of one round: its chunks' figures added up."""

    path: str  # "ingress" or "fold"
    side: str  # "off" or "on"
    index: int
    units: int  # requests or records
    chunks: int
    wall_s: float
    cpu_s: float  # this process's user + system time during the chunks
    busy_during: float | None  # the whole machine, fraction of all cores
    others_during: float | None  # of which neither this process nor the drain
    background_busy: float | None  # machine busy just before the round
    checks: dict[str, Any] = field(default_factory=dict)
    chunk_wall_s: list[float] = field(default_factory=list)  # in the order they ran
    # False: a run of its round was disturbed by other processes and the round was run again
    counted: bool = True

    @property
    def disturbed(self) -> bool:
        return self.others_during is not None and self.others_during >= QUIET_BELOW

    @property
    def rate(self) -> float:
        return self.units / self.wall_s

    @property
    def cpu_rate(self) -> float:
        return self.units / self.cpu_s if self.cpu_s > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "per_s": self.rate,
            "per_cpu_s": self.cpu_rate,
            "disturbed": self.disturbed,
        }


class Meter:
    """Wall time, this process's CPU time, and how busy the machine was, added up over the
    chunks of one side of a round."""

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self._drain_cpu_s = 0.0
        self._busy = 0
        self._total = 0
        self.chunk_wall_s: list[float] = []

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        jiffies, drain_cpu = cpu_jiffies(), self._drain.cpu_seconds()
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        wall_s = time.perf_counter() - wall
        self.wall_s += wall_s
        self.chunk_wall_s.append(round(wall_s, 6))
        self.cpu_s += time.process_time() - cpu
        after = cpu_jiffies()
        self._busy += after[0] - jiffies[0]
        self._total += after[1] - jiffies[1]
        self._drain_cpu_s += self._drain.cpu_seconds() - drain_cpu

    @property
    def busy(self) -> float | None:
        return busy_between((0, 0), (self._busy, self._total))

    @property
    def others(self) -> float | None:
        busy = self.busy
        if busy is None or self.wall_s <= 0:
            return None
        ours = (self.cpu_s + self._drain_cpu_s) / (self.wall_s * len(os.sched_getaffinity(0)))
        return max(0.0, busy - ours)


def _share(total: int, k: int, chunks: int) -> range:
    """The k-th of `chunks` consecutive shares of range(total)."""
    return range(total * k // chunks, total * (k + 1) // chunks)


def _add_sent(into: dict[str, Any], sent: dict[str, Any]) -> None:
    for name in ("datagrams", "bytes", "lines"):
        into[name] = into.get(name, 0) + sent.get(name, 0)
    for name in ("counters", "timer_lines", "gauge_lines"):
        mine = into.setdefault(name, {})
        for key, value in sent.get(name, {}).items():
            mine[key] = mine.get(key, 0) + value


def _sent_summary(sent: dict[str, Any]) -> dict[str, Any]:
    return {
        "datagrams": sent.get("datagrams", 0),
        "bytes": sent.get("bytes", 0),
        "lines": sent.get("lines", 0),
        # every report carries the process's memory gauge: the ticks, plus one per chunk's end
        "reports": sent.get("gauge_lines", {}).get(m.MEMORY_RSS.full_name, 0),
    }


class SideRun:
    """One side (off or on) of one round: hooks built afresh from the settings, then run one
    chunk at a time. A chunk is measured from entering `metrics.reporting()` to leaving it, so
    the reporter's ticks and its last report (what the chunk recorded and no tick sent yet) are
    paid for inside it. What the drain received is taken after each chunk, outside."""

    metrics: IngressMetrics | AggregatorMetrics

    def __init__(self, side: str, args: argparse.Namespace, drain: Drain) -> None:
        self.side = side
        self.settings = settings_for(side, args, drain.port)
        self.drain = drain
        self.meter = Meter(drain)
        self.sent: dict[str, Any] = {}

    async def chunk(self, k: int, chunks: int) -> None:
        with self.meter.measure():
            async with self.metrics.reporting():
                await self._work(k, chunks)
        _add_sent(self.sent, await self.drain.take())

    async def _work(self, k: int, chunks: int) -> None:
        raise NotImplementedError

    def checks(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def sends(self) -> bool:
        """Whether these hooks report anywhere (the "on" side, unless --null-test)."""
        return self.settings.metrics.reporter != "off"

    def _sent_checks(self, correct: bool) -> dict[str, Any]:
        if not self.sends and self.sent.get("datagrams"):
            correct = False  # metrics off sent something
        return {"correct": correct, **_sent_summary(self.sent)}


# -- path 1: the ingress's request ----------------------------------------------------------------


class AckingPublisher:
    """The ingress's Publisher: every record is acknowledged at once."""

    inflight_sends = 0

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, key: bytes, value: bytes) -> None:
        self.published += 1

    async def publish_batch(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.published += len(records)

    async def check(self, timeout_s: float) -> None:
        pass


class NoTotals:
    """The ingress's CounterReader; POST /increment never reads."""

    async def read(self, key: str) -> int | None:
        return None

    async def check(self, timeout_s: float) -> None:
        pass


Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class IngressWorkload:
    scopes: list[dict[str, Any]]  # one per key: copied for each request
    receives: list[Receive]

    @classmethod
    def build(cls, keys: int) -> IngressWorkload:
        scopes: list[dict[str, Any]] = []
        receives: list[Receive] = []
        for i in range(keys):
            body = orjson.dumps({"key": f"c{i}", "value": 1})
            scopes.append(
                {
                    "type": "http",
                    "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "http_version": "1.1",
                    "method": "POST",
                    "scheme": "http",
                    "path": "/increment",
                    "raw_path": b"/increment",
                    "root_path": "",
                    "query_string": b"",
                    "headers": [
                        (b"host", b"127.0.0.1:3333"),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                    "client": ("127.0.0.1", 40000),
                    "server": ("127.0.0.1", 3333),
                }
            )
            receives.append(_receiver({"type": "http.request", "body": body, "more_body": False}))
        return cls(scopes, receives)


def _receiver(message: dict[str, Any]) -> Receive:
    async def receive() -> dict[str, Any]:
        return message

    return receive


class IngressRun(SideRun):
    metrics: IngressMetrics

    def __init__(
        self, side: str, args: argparse.Namespace, drain: Drain, workload: IngressWorkload
    ) -> None:
        super().__init__(side, args, drain)
        self.metrics = ingress_metrics(self.settings.metrics)
        self.publisher = AckingPublisher()
        publisher = self.publisher
        self.metrics.watch_inflight_sends(lambda: publisher.inflight_sends)
        self.app = create_app(self.settings, publisher, NoTotals(), metrics=self.metrics)
        self.workload = workload
        self.total = args.requests
        self.concurrency = args.concurrency
        self.statuses: dict[int, int] = {}

    async def _work(self, k: int, chunks: int) -> None:
        app, statuses = self.app, self.statuses
        scopes, receives = self.workload.scopes, self.workload.receives
        keys = len(scopes)
        share = _share(self.total, k, chunks)

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                statuses[status] = statuses.get(status, 0) + 1

        async def worker(requests: range) -> None:
            # each request is awaited to its end, then the loop gets a turn (timers, reporter)
            for i in requests:
                await app(dict(scopes[i % keys]), receives[i % keys], send)
                await asyncio.sleep(0)

        step = self.concurrency
        await asyncio.gather(*(worker(share[w::step]) for w in range(min(step, len(share)))))

    def checks(self) -> dict[str, Any]:
        total = self.total
        ok = self.statuses == {202: total} and self.publisher.published == total
        checks: dict[str, Any] = {
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "published": self.publisher.published,
        }
        if self.sends:
            requests_counted = counted(self.sent, m.REQUESTS, ("increment", 202))
            timers = self.sent.get("timer_lines", {})
            checks["requests_counted"] = requests_counted
            checks["request_duration_lines"] = timers.get(m.REQUEST_DURATION.full_name, 0)
            checks["produce_duration_lines"] = timers.get(m.PRODUCE_DURATION.full_name, 0)
            ok = ok and requests_counted == total
        return {**checks, **self._sent_checks(ok)}


# -- path 2: the aggregator's fold ----------------------------------------------------------------


@dataclass
class FoldWorkload:
    # one list per fetch of MAX_RECORDS_PER_FETCH records: (partition, its records), as the
    # aggregator's getmany hands them over
    fetches: list[list[tuple[int, list[ConsumerRecord[bytes, bytes]]]]]
    records: int
    partitions: int
    ends: dict[int, int]  # partition -> offset after its last record

    @classmethod
    def build(cls, records: int, keys: int, partitions: int, spread_ms: int) -> FoldWorkload:
        """Record i: counter key k<i mod keys>, its value `encode_record`'s, in the partition
        its key hashes to here (each key in one partition, as Kafka's partitioner does), offsets
        counting up per partition, timestamps spread evenly over `spread_ms` ending now."""
        encoded = [encode_record(Increment(f"k{k}", 1)) for k in range(keys)]
        base_ms = int(time.time() * 1000) - spread_ms
        offsets = dict.fromkeys(range(partitions), 0)
        fetches = []
        for start in range(0, records, MAX_RECORDS_PER_FETCH):
            by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
            for i in range(start, min(records, start + MAX_RECORDS_PER_FETCH)):
                key, value = encoded[i % keys]
                partition = (i % keys) % partitions
                offset = offsets[partition]
                offsets[partition] = offset + 1
                by_partition.setdefault(partition, []).append(
                    ConsumerRecord(
                        topic="distcount.increments",
                        partition=partition,
                        offset=offset,
                        timestamp=base_ms + (i * spread_ms) // records,
                        timestamp_type=0,
                        key=key,
                        value=value,
                        checksum=None,
                        serialized_key_size=len(key),
                        serialized_value_size=len(value),
                        headers=[],
                    )
                )
            fetches.append(sorted(by_partition.items()))
        return cls(fetches, records, partitions, offsets)


class FoldRun(SideRun):
    metrics: AggregatorMetrics

    def __init__(
        self, side: str, args: argparse.Namespace, drain: Drain, workload: FoldWorkload
    ) -> None:
        super().__init__(side, args, drain)
        self.metrics = aggregator_metrics(self.settings.metrics)
        self.workload = workload
        self.flush_every = args.flush_every
        # a fresh state per run: every side of every round folds the same records afresh
        self.states = {p: PartitionState(p, None) for p in range(workload.partitions)}
        self.known_keys: set[str] = set()
        states, ends = self.states, workload.ends
        self.metrics.watch_live_entries(lambda: sum(state.entries for state in states.values()))
        self.metrics.watch_lag(
            lambda: {p: ends[p] - (s.position or 0) for p, s in states.items() if s.position}
        )
        self.folded = self.flushes = self.rejected = 0

    def _flush(self) -> None:
        # what the aggregator's flush does around its PostgreSQL transaction, on success
        metrics = self.metrics
        for state in self.states.values():
            if state.dirty:
                entries = state.entries
                self.folded += sum(sum(keys.values()) for keys in state.deltas.values())
                metrics.on_flush(state.partition, "tick", "committed", entries, FLUSH_DURATION_S)
                state.committed()
                self.flushes += 1

    async def _work(self, k: int, chunks: int) -> None:
        metrics, states, known_keys = self.metrics, self.states, self.known_keys
        bucket_ms, flush_every = self.settings.bucket_ms, self.flush_every
        fetches = self.workload.fetches
        share = _share(len(fetches), k, chunks)
        for n in share:
            for partition, records in fetches[n]:
                metrics.on_fetched(partition, records)
                self.rejected += len(fold(states[partition], records, bucket_ms, known_keys))
            if (n + 1) % flush_every == 0:
                self._flush()
            await asyncio.sleep(0)  # the next getmany: the loop gets a turn
        if share.stop == len(fetches):
            self._flush()

    def checks(self) -> dict[str, Any]:
        records = self.workload.records
        ok = self.folded == records and self.rejected == 0
        checks: dict[str, Any] = {
            "folded": self.folded,
            "rejected": self.rejected,
            "flushes": self.flushes,
        }
        if self.sends:
            records_counted = counted(self.sent, m.RECORDS_IN)
            checks["records_counted"] = records_counted
            checks["delay_lines"] = self.sent.get("timer_lines", {}).get(m.DELAY.full_name, 0)
            ok = ok and records_counted == records
        return {**checks, **self._sent_checks(ok)}


# -- the report -----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _overhead(on: float, off: float) -> float:
    return (1 - on / off) * 100


def summarize(runs: list[RunResult], path: str) -> dict[str, Any] | None:
    off = [r for r in runs if r.path == path and r.side == "off" and r.counted]
    on = [r for r in runs if r.path == path and r.side == "on" and r.counted]
    if not off or not on:
        return None
    off_rate, on_rate = median([r.rate for r in off]), median([r.rate for r in on])
    by_index = {r.index: r for r in off}
    paired = [_overhead(r.rate, by_index[r.index].rate) for r in on if r.index in by_index]
    # The headline: each "on" chunk against the "off" chunk run next to it. This machine's speed
    # swings by up to 2x within seconds; neighbours in time share it, whole runs do not.
    chunk_pairs = [
        _overhead(off_wall, on_wall)  # equal work: the rate ratio is the inverse time ratio
        for r in on
        if r.index in by_index
        for on_wall, off_wall in zip(r.chunk_wall_s, by_index[r.index].chunk_wall_s, strict=True)
    ]
    overhead = median(chunk_pairs)
    cpu_overhead = _overhead(median([r.cpu_rate for r in on]), median([r.cpu_rate for r in off]))

    def spread(side: list[RunResult]) -> dict[str, float]:
        rates = [r.rate for r in side]
        mid = median(rates)
        return {"min": min(rates), "max": max(rates), "relative": (max(rates) - min(rates)) / mid}

    correct = all(r.checks.get("correct") for r in off + on)
    return {
        "runs_per_side": min(len(off), len(on)),
        "rounds_set_aside": len({r.index for r in runs if r.path == path and not r.counted}),
        "counted_rounds_disturbed": len({r.index for r in off + on if r.disturbed}),
        "median_per_s": {"off": off_rate, "on": on_rate},
        "overhead_pct": overhead,
        "chunk_pairs": len(chunk_pairs),
        "overhead_of_medians_pct": _overhead(on_rate, off_rate),
        "paired_overhead_pct": {
            "each": paired,
            "min": min(paired) if paired else None,
            "median": median(paired) if paired else None,
            "max": max(paired) if paired else None,
        },
        "spread": {"off": spread(off), "on": spread(on)},
        "median_per_cpu_s": {
            "off": median([r.cpu_rate for r in off]),
            "on": median([r.cpu_rate for r in on]),
        },
        "cpu_overhead_pct": cpu_overhead,
        "limit_pct": LIMIT_PCT,
        "all_checks_correct": correct,
        "verdict": "PASS" if overhead <= LIMIT_PCT and correct else "FAIL",
    }


def _counted_cell(run: RunResult) -> str:
    if not run.counted:
        return "no: disturbed, run again"
    return "yes (disturbed)" if run.disturbed else "yes"


def _paired_cell(paired: dict[str, Any]) -> str:
    return " / ".join(f"{paired[k]:+.1f}" for k in ("min", "median", "max")) + " %"


def _check_cell(run: RunResult) -> str:
    c = run.checks
    ok = "ok" if c.get("correct") else "WRONG"
    if run.path == "ingress":
        counted_ = f", counted {c['requests_counted']:,}" if "requests_counted" in c else ""
        return f"{ok}: {c['statuses']}{counted_}"
    counted_ = f", counted {c['records_counted']:,}" if "records_counted" in c else ""
    return f"{ok}: folded {c['folded']:,}, {c['flushes']} flushes{counted_}"


def build_report(
    meta: dict[str, Any], runs: list[RunResult], error: str | None
) -> tuple[dict[str, Any], str]:
    summaries = {path: summarize(runs, path) for path in meta["paths"]}
    measured = {path: s for path, s in summaries.items() if s is not None}
    if not measured:
        lines = [f"- {r.path} {r.side} run {r.index}: {r.rate:,.0f}/s" for r in runs]
        return failed_report(
            "Metrics overhead", meta, [r.as_dict() for r in runs], lines, error or "no runs"
        )
    missing = [path for path, s in summaries.items() if s is None]
    failed = any(s["verdict"] == "FAIL" for s in measured.values())
    verdict = "ERROR" if error or missing else "FAIL" if failed else "PASS"
    summary = {
        "paths": summaries,
        "verdict": verdict,
        "error": error,
        "limit_pct": LIMIT_PCT,
        "null_test": meta["workload"]["null_test"],
    }
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}

    mach, w = meta["machine"], meta["workload"]
    null = w["null_test"]
    md = [
        f"# Metrics overhead{' (null test: off against off)' if null else ''}, {meta['stamp']}",
        "",
        *(
            [
                '**Null test: the "on" side runs with metrics off as well.** The overhead below '
                "is what the method shows where there is none: its noise and bias.",
                "",
            ]
            if null
            else []
        ),
        f"Machine: nproc {mach['nproc']} ({mach['cpu_model']}), {mach['memory_gib']} GiB, "
        f"Python {mach['python']}, uvloop {meta['versions']['uvloop']}, Starlette "
        f"{meta['versions']['starlette']}. One process, one uvloop event loop; the datagram "
        "drain is a child process.",
        "",
        f'Metrics "on": reporter {w["reporter"]} to a UDP port on 127.0.0.1, every '
        f"{w['interval_ms']} ms, sample rate {w['sample_rate']}, constant tags "
        f'{w["tags"] or "(none)"}; "off": DISTCOUNT_METRICS=off. {w["repeat"]} rounds per path '
        "counted; in each round both sides' hooks are built afresh (after one unmeasured chunk a "
        "side, to warm up) "
        f"and each side's run is cut into {w['chunks']} chunks, run alternately (off 1, on 1, "
        "on 2, off 2, off 3, on 3, ...; starting with on in even rounds), so that both meet the "
        "same moments of a machine whose speed drifts, and each runs second (right after the "
        "other, which leaves the records it read in the CPU's caches) in half the chunks.",
        "",
    ]
    if "ingress" in meta["paths"]:
        md += [
            f"**ingress**: {w['requests']:,} `POST /increment` requests per run through the "
            f"app of `create_app` called as an ASGI app by {w['concurrency']} coroutines (each "
            "request awaited to its end, then the loop gets a turn), bodies "
            f'`{{"key": "c<i mod {w["ingress_keys"]}>", "value": 1}}`, a publisher that '
            "acknowledges at once; the garbage-collector tuning of the ingress's `serve` "
            "(`collect_garbage_rarely`). No HTTP server and no socket: the app's own cost, "
            "which a real server's parsing and I/O would only dilute.",
            "",
        ]
    if "fold" in meta["paths"]:
        md += [
            f"**fold**: {w['records']:,} `aiokafka` consumer records per run ({w['fold_keys']:,}"
            f" keys, {w['partitions']} partitions, timestamps spread over {w['spread_ms']:,} ms,"
            f" buckets of {w['bucket_ms']:,} ms), in fetches of {w['fetch_records']:,} split by "
            "partition; for each partition's share `metrics.on_fetched` then `fold`; every "
            f"{w['flush_every']} fetches (and at the end) each dirty partition's flush is "
            "simulated: `metrics.on_flush(..., 'committed', entries, 0.01)` then "
            "`state.committed()` (no PostgreSQL). A fresh state per run.",
            "",
        ]
    md += [
        "Rates are units over the wall time of a run's chunks, each timed from entering "
        "`metrics.reporting()` to leaving it: the reporter's ticks and its last report (what the "
        'chunk recorded and no tick sent yet) are inside. "per CPU s" divides by this '
        "process's CPU time instead. "
        '"others" = the share of all cores busy with other processes during the run (neither '
        f"this process nor the drain); a round where it reached {QUIET_BELOW:.0%} in either run "
        "is disturbed: it is set aside and run again (at most --max-extra times per path), and "
        "the medians are of the rounds counted.",
        "",
        markdown_table(
            [
                "path",
                "round",
                "side",
                "units",
                "wall s",
                "per s",
                "per CPU s",
                "others",
                "counted",
                "datagrams",
                "reports",
                "check",
            ],
            [
                [
                    r.path,
                    r.index,
                    r.side,
                    r.units,
                    f"{r.wall_s:.3f}",
                    f"{r.rate:,.0f}",
                    f"{r.cpu_rate:,.0f}",
                    _pct(r.others_during),
                    _counted_cell(r),
                    r.checks.get("datagrams", 0),
                    r.checks.get("reports", 0),
                    _check_cell(r),
                ]
                for r in runs
            ],
        ),
        "",
        markdown_table(
            [
                "path",
                "median off /s",
                "median on /s",
                "overhead (median of chunk pairs)",
                "1 - median on / median off",
                "paired runs min / median / max",
                "spread off",
                "spread on",
                "overhead per CPU s",
                "limit",
                "verdict",
            ],
            [
                [
                    f"{path} ({'requests' if path == 'ingress' else 'records'})",
                    f"{s['median_per_s']['off']:,.0f}",
                    f"{s['median_per_s']['on']:,.0f}",
                    f"{s['overhead_pct']:+.2f} % ({s['chunk_pairs']} pairs)",
                    f"{s['overhead_of_medians_pct']:+.2f} %",
                    _paired_cell(s["paired_overhead_pct"]),
                    f"{s['spread']['off']['relative']:.1%}",
                    f"{s['spread']['on']['relative']:.1%}",
                    f"{s['cpu_overhead_pct']:+.2f} %",
                    f"≤ {LIMIT_PCT:g} %",
                    s["verdict"]
                    + ("" if s["all_checks_correct"] else " (a check failed: see the runs)"),
                ]
                for path, s in measured.items()
            ],
        ),
        "",
        "Overhead = the median, over every chunk of every round counted, of 1 - (off chunk's "
        "time / on chunk's time), the two chunks run one after the other on equal work; "
        "1 - median on / median off = the same from whole runs' per-second rates; paired runs = "
        "that for each round's two runs; spread = (max - min) / median of a side's rates; "
        "overhead per CPU s = 1 - median on / median off from the rates per CPU second. Each "
        "chunk's time is in the JSON report.",
        "",
        *(
            f"{path}: {s['rounds_set_aside']} round(s) set aside as disturbed; "
            f"{s['counted_rounds_disturbed']} counted round(s) disturbed all the same.\n"
            for path, s in measured.items()
            if s["rounds_set_aside"] or s["counted_rounds_disturbed"]
        ),
        ("**Null test: off against off shows " if null else "**Headline: metrics on cost ")
        + ", ".join(f"{s['overhead_pct']:.2f} % on the {p} path" for p, s in measured.items())
        + f"; limit {LIMIT_PCT:g} %: {verdict}**",
        *error_lines(error),
    ]
    return data, "\n".join(md)


# -- main -----------------------------------------------------------------------------------------


async def measure_path(
    path: str, args: argparse.Namespace, drain: Drain, runs: list[RunResult]
) -> None:
    """Rounds until `--repeat` of them are counted (a disturbed one is run again)."""
    workload: Any
    guard: contextlib.AbstractContextManager[None]
    if path == "ingress":
        workload = IngressWorkload.build(args.ingress_keys)
        guard = collect_garbage_rarely()
    else:
        say(f"building {args.records:,} consumer records")
        workload = FoldWorkload.build(args.records, args.fold_keys, args.partitions, args.spread_ms)
        guard = contextlib.nullcontext()
        gc.collect()
        gc.freeze()  # the records outlive every run: out of the collector's way

    def side_run(side: str) -> SideRun:
        if path == "ingress":
            return IngressRun(side, args, drain, workload)
        return FoldRun(side, args, drain, workload)

    try:
        with guard:
            counted = extra = index = 0
            while counted < args.repeat:
                index += 1
                pair = await run_round(path, index, args, drain, side_run)
                runs.extend(pair)
                if any(r.disturbed for r in pair) and extra < args.max_extra:
                    extra += 1
                    for r in pair:
                        r.counted = False
                    say(f"{path} round {index} was disturbed by other processes: run again")
                else:
                    counted += 1
    finally:
        if path == "fold":
            del workload
            gc.unfreeze()


async def run_round(
    path: str,
    index: int,
    args: argparse.Namespace,
    drain: Drain,
    side_run: Callable[[str], SideRun],
) -> list[RunResult]:
    """Each side's hooks built afresh, then its run cut into chunks, run alternately with the
    other side's, so that both meet the same moments of a machine whose speed drifts.

    The order is off-on, on-off, off-on... (on-off first in even rounds): each side runs second
    in half the chunks, where it finds the records the other side has just read still in the
    CPU's caches, and a round starts with each side in turn."""
    chunks = args.chunks
    before = await background_busy(args.wait_quiet_s)
    gc.collect()
    order = ("off", "on") if index % 2 else ("on", "off")
    # after a second of idling the first chunk would run slow: one chunk a side, thrown away,
    # gets the machine going again
    for side in order:
        await side_run(side).chunk(0, chunks)
    await drain.take()
    sides = [side_run(side) for side in order]
    for k in range(chunks):
        for run_ in sides if k % 2 == 0 else sides[::-1]:
            await run_.chunk(k, chunks)
    units = args.requests if path == "ingress" else args.records
    pair = [
        RunResult(
            path,
            s.side,
            index,
            units,
            chunks,
            s.meter.wall_s,
            s.meter.cpu_s,
            s.meter.busy,
            s.meter.others,
            before,
            s.checks(),
            s.meter.chunk_wall_s,
        )
        for s in sorted(sides, key=lambda s: s.side != "off")
    ]
    for run in pair:
        say(
            f"{path} round {index} {run.side:>3}: {run.rate:,.0f}/s "
            f"({run.wall_s:.3f} s wall, {run.cpu_s:.3f} s CPU, others "
            f"{_pct(run.others_during)}, {run.checks['datagrams']} datagrams"
            f"{'' if run.checks['correct'] else ', CHECK FAILED'})"
        )
    return pair


async def bench(args: argparse.Namespace) -> int:
    stamp = utc_stamp()
    paths = PATHS if args.path == "both" else (args.path,)
    say(
        f"metrics overhead: paths {', '.join(paths)}; {args.repeat} rounds; reporter "
        f"{args.reporter} every {args.interval_ms} ms, sample rate {args.sample_rate}"
    )
    machine = machine_facts()
    runs: list[RunResult] = []
    error: str | None = None
    drain = await Drain.start()
    say(f"datagram drain listening on 127.0.0.1:{drain.port} (pid {drain.process.pid})")
    try:
        for path in paths:
            await measure_path(path, args, drain, runs)
    except Exception as exc:  # report what was measured, and why the rest was not
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        say(f"stopped early: {exc}")
    finally:
        await drain.stop()
    meta = {
        "benchmark": "metrics_overhead",
        "stamp": stamp,
        "machine": machine,
        "paths": list(paths),
        "versions": {
            name: version(name) for name in ("uvloop", "starlette", "aiokafka", "orjson", "statsd")
        },
        "workload": {
            "repeat": args.repeat,
            "chunks": args.chunks,
            "null_test": args.null_test,
            "max_extra": args.max_extra,
            "disturbed_at_others": QUIET_BELOW,
            "reporter": args.reporter,
            "interval_ms": args.interval_ms,
            "sample_rate": args.sample_rate,
            "tags": args.tags,
            "requests": args.requests,
            "ingress_keys": args.ingress_keys,
            "concurrency": args.concurrency,
            "records": args.records,
            "fold_keys": args.fold_keys,
            "partitions": args.partitions,
            "spread_ms": args.spread_ms,
            "bucket_ms": args.bucket_ms,
            "fetch_records": MAX_RECORDS_PER_FETCH,
            "flush_every": args.flush_every,
        },
    }
    data, markdown = build_report(meta, runs, error)
    write_report("metrics_overhead", stamp, data, markdown)
    verdict = data["summary"]["verdict"]
    return 0 if verdict == "PASS" else 1 if verdict == "FAIL" else 2


def main() -> None:
    if sys.argv[1:] == ["--drain"]:
        drain_main()
        return
    parser = argparse.ArgumentParser(
        description="What distcount's metrics cost on the ingress's request and the "
        "aggregator's fold: off against on, interleaved, in one process."
    )
    parser.add_argument("--repeat", type=int, default=7, help="rounds (an off and an on run)")
    parser.add_argument("--path", choices=(*PATHS, "both"), default="both", help="what to run")
    parser.add_argument("--requests", type=int, default=150_000, help="ingress requests per run")
    parser.add_argument(
        "--ingress-keys", type=int, default=1000, help="distinct keys of the ingress requests"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="coroutines sending ingress requests"
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="records folded per run")
    parser.add_argument("--fold-keys", type=int, default=10_000, help="distinct keys folded")
    parser.add_argument("--partitions", type=int, default=6, help="partitions the records are in")
    parser.add_argument(
        "--spread-ms", type=int, default=5000, help="record timestamps spread over this many ms"
    )
    parser.add_argument(
        "--bucket-ms", type=int, default=1000, help="the fold's time buckets (DISTCOUNT_BUCKET_MS)"
    )
    parser.add_argument(
        "--flush-every", type=int, default=20, help="fetches between two simulated flushes"
    )
    parser.add_argument(
        "--reporter", choices=("dogstatsd", "statsd"), default="dogstatsd", help='"on" reporter'
    )
    parser.add_argument(
        "--interval-ms",
        type=int,
        default=1000,
        help="DISTCOUNT_METRICS_INTERVAL_MS when on (5000 by default in the services)",
    )
    parser.add_argument(
        "--sample-rate", type=float, default=0.01, help="DISTCOUNT_METRICS_SAMPLE_RATE when on"
    )
    parser.add_argument(
        "--tags",
        default="env:bench,region:local",
        help="DISTCOUNT_METRICS_TAGS when on (DogStatsD constant tags)",
    )
    parser.add_argument(
        "--null-test",
        action="store_true",
        help='the "on" side with metrics off too: what the method shows when there is no cost',
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=5,
        help="each run is cut into this many chunks, run alternately with the other side's",
    )
    parser.add_argument(
        "--max-extra",
        type=int,
        default=7,
        help="rounds run again per path when other processes disturbed one (then counted anyway)",
    )
    parser.add_argument(
        "--wait-quiet-s",
        type=float,
        default=60.0,
        help="before each round, wait up to this long for other processes to leave the CPU idle",
    )
    args = parser.parse_args()
    if min(args.repeat, args.requests, args.records, args.flush_every, args.concurrency) < 1:
        parser.error("--repeat, --requests, --records, --flush-every, --concurrency must be >= 1")
    fetches = -(-args.records // MAX_RECORDS_PER_FETCH)
    if args.chunks < 1 or args.chunks > min(args.requests, fetches):
        parser.error("--chunks must be >= 1, with a fetch of records and a request in each")
    if args.max_extra < 0:
        parser.error("--max-extra must be >= 0")
    if min(args.ingress_keys, args.fold_keys, args.partitions, args.spread_ms) < 1:
        parser.error("--ingress-keys, --fold-keys, --partitions and --spread-ms must be >= 1")
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        raise SystemExit(runner.run(bench(args)))
    raise SystemExit(130)


if __name__ == "__main__":
    main()
