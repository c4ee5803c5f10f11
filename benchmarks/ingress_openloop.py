"""The ingress's writes against a bare Starlette handler and the handler a user would write:
peak throughput (closed loop) and latencies at fixed rates (open loop), for single increments
and batches of 100 and 1,000, in the same run.

Sides, each a server in a child process, under uvicorn with the ingress's settings:

- bare: benchmarks/bare_app.py: `POST /increment` and `POST /increments` parse the body with
  orjson and answer 202 with it; no validation, no Kafka. The floor of any handler.
- naive: benchmarks/naive_app.py: one plain AIOKafkaProducer (acks=1), `send_and_wait` per
  request (a batch: every item sent, then all awaited), 202 after the broker's acknowledgement.
- ours: `python -m distcount_cli ingress` (what `distcount ingress` runs) on the run's private
  topic and database, as the services' role: singles through the idempotent producer, batches in
  Kafka transactions with group commit.

Payloads: `single` (`POST /increment`, `{"key": "k<random>", "value": 1}`), `batch100` and
`batch1000` (`POST /increments`, `{"increments": [...]}` of 100 or 1,000 increments of 1 on
consecutive keys from a random one, so distinct within a batch: the ingress sums a batch by key,
and distinct keys make it write one record per increment, as naive does).

For each payload, R rounds (the order of the sides alternating), each round:

1. Peak: each side started afresh, warmed up, then loaded closed-loop by wrk (`harness/_wrk.py`,
   with a Lua script of this payload): requests/s, and increments/s = requests/s x batch.
2. Open loop, by vegeta (`harness/_vegeta.py`): each side started afresh once, loaded at 50 %
   and at 80 % of its own peak of this round, and at one rate for all three sides, 80 % of the
   slowest side's peak of this round ("same-rate"; the slowest side's own 80 % run is that run,
   not run twice). Each load: a warm-up attack at the rate (not measured), then the measured
   one, from a targets file of up to `--targets` distinct bodies. Every request is timed from
   its slot in vegeta's schedule (coordinated omission corrected), and how late vegeta sent it
   is measured too: a run whose worst send lag is above 5 ms, or that did not send its whole
   schedule, is flagged as not open loop, with why (the server behind, or vegeta late).

Why vegeta and not the Python open-loop driver (`harness/_openloop_driver.py`): that driver
costs some 100 µs of CPU a request, so at 80 % of the single increments' peak (8,000 to 16,000
requests/s) it and the server could not both fit on 2 cores: requests went unsent and the
latencies were the driver's. vegeta costs about half of that at those rates, on threads of its
own, and its lag is checked; its CPU seconds are in the report beside the server's. Every
open-loop run of every payload uses it, so no comparison mixes two load generators.

Every run of naive and ours is checked: the records the topic gained (counted by a
read_committed consumer once the topic has settled, so transaction markers are not counted)
must equal the increments answered 2xx. Open loop answers every request sent, so the only
excess allowed is that of requests that failed (a 503 or a timeout may be written all the same);
under wrk, also the requests in flight when it stops (written, never counted by wrk): at most
(connections + non-2xx) x batch.

Targets (medians over the rounds, ratios of medians): single increments, ours >= 0.85 x bare's
peak requests/s and >= 1.5 x naive's, and ours' p99 <= 0.5 x naive's at the same rate; batches
of 1,000, ours >= 250,000 increments/s at peak; batches of 100, ours >= 5 x ours' single
increments/s at peak. PASS needs every target and every check.

The JSON report's `summary`:

    {"verdict": "PASS" | "FAIL" | "ERROR", "error": str | None,
     "targets": [{"name": str, "figure": float, "limit": float, "floor": bool,
                  "unit": "x" | "increments/s", "met": bool}, ...],
     "checks_ok": bool, "check": str,
     "peaks": {payload: {side: {"requests_per_s": float, "increments_per_s": float}}},
     "openloop": {payload: {side: {level: {"rate": float, "p50_ms": float, "p90_ms": float,
                  "p99_ms": float, "p999_ms": float, "max_ms": float, "errors": int}}}}}

(latencies in ms from the request's slot; errors = non-2xx answers, requests with none, and
requests of the schedule vegeta never sent.)

payload is "single", "batch100" or "batch1000"; side "bare", "naive" or "ours"; level "50%",
"80%" or "same-rate"; every figure the median over the rounds (errors: the sum). `runs` holds
every run.

    .venv/bin/python benchmarks/ingress_openloop.py [--repeat 2] [--duration 5]
    .venv/bin/python benchmarks/ingress_openloop.py --quick

vegeta is taken from PATH, else from ~/.cache/distcount/bin, else installed there with `go
install` (see `harness/_vegeta.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

import harness as h
from harness import _vegeta as vg


@dataclass(frozen=True)
class Payload:
    name: str
    path: str
    batch: int  # 0: one increment a request

    @property
    def increments(self) -> int:
        """Increments a request carries."""
        return max(1, self.batch)


PAYLOADS = (
    Payload("single", "/increment", 0),
    Payload("batch100", "/increments", 100),
    Payload("batch1000", "/increments", 1000),
)
SIDES = ("bare", "naive", "ours")
LEVELS = {"50%": 0.5, "80%": 0.8}
SAME = "same-rate"
SAME_SHARE = 0.8  # of the slowest side's peak
QUICK = {"duration": 2, "warmup": 1, "repeat": 1}
CHECK = (
    "records the topic gained (read_committed, transaction markers not counted) = increments "
    "answered 2xx, in every run of naive and ours; excess allowed only for requests that failed "
    "and, under wrk, those in flight when it stopped"
)

# wrk's Lua for one payload: the request of `harness/_wrk.py`'s script, with this payload's
# path and body; `done` prints the summary line `harness/_wrk.py` reads
_LUA = """-- benchmarks/ingress_openloop.py: PATH, BATCH increments a request (0: one, no list)
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
end

local keys, batch = KEYS, BATCH
local headers = {["Content-Type"] = "application/json"}

local function item(n)
  return '{"key":"k' .. n .. '","value":1}'
end

function request()
  local start = math.random(0, keys - 1)
  if batch == 0 then
    return wrk.format("POST", "PATH", headers, item(start))
  end
  local items = {}
  for i = 0, batch - 1 do
    items[i + 1] = item((start + i) % keys)
  end
  return wrk.format("POST", "PATH", headers, '{"increments":[' .. table.concat(items, ",") .. ']}')
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


class Written:
    """The records committed to the topic so far, counted by a read_committed consumer from
    where the last count stopped. End offsets would not do: every transaction's commit marker
    takes an offset in each partition it wrote to."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._bootstrap = bootstrap
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self._topic = topic
        self._positions = dict.fromkeys(self._partitions, 0)
        self.total = 0

    async def __call__(self, timeout_s: float = 120.0) -> int:
        # the load is over, but the last transactions may still commit: wait for quiet
        await h.settled_total(self._bootstrap, self._topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await asyncio.wait_for(consumer.start(), 30)
        try:
            consumer.assign(self._partitions)
            for tp, offset in self._positions.items():
                consumer.seek(tp, offset)
            ends = await consumer.end_offsets(self._partitions)
            deadline = time.monotonic() + timeout_s
            while [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"counting the records of {self._topic} took too long")
                fetched = await consumer.getmany(timeout_ms=500, max_records=100_000)
                self.total += sum(len(records) for records in fetched.values())
            for tp in self._partitions:
                self._positions[tp] = await consumer.position(tp)
        finally:
            await consumer.stop()
        return self.total


def records_check(added: int, answered: int, allowed_extra: int) -> dict[str, Any]:
    extra = added - answered
    return {
        "records_added": added,
        "increments_2xx": answered,
        "extra_records": extra,
        "allowed_extra": allowed_extra,
        "consistent": 0 <= extra <= allowed_extra,
    }


@dataclass
class Peak:
    """A closed-loop run: wrk against a server started afresh."""

    payload: str
    side: str
    index: int
    load: h.LoadResult
    increments: int  # a request's

    kind = "peak"

    @property
    def check(self) -> dict[str, Any] | None:
        return self.load.records_check

    @property
    def requests_per_s(self) -> float:
        return self.load.requests_per_s

    @property
    def increments_per_s(self) -> float:
        return self.load.requests_per_s * self.increments

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "payload": self.payload,
            "side": self.side,
            "index": self.index,
            "increments_per_request": self.increments,
            "requests_per_s": self.requests_per_s,
            "increments_per_s": self.increments_per_s,
            "wrk": self.load.as_dict(),
        }


@dataclass
class Fixed:
    """An open-loop run at a fixed rate, by vegeta; `levels` are the levels it stands for (the
    slowest side's 80 % run is its same-rate run too)."""

    payload: str
    side: str
    index: int
    levels: list[str]
    run: vg.VegetaRun
    increments: int
    check: dict[str, Any] | None = None

    kind = "open loop"

    @property
    def errors(self) -> int:
        return self.run.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "payload": self.payload,
            "side": self.side,
            "index": self.index,
            "levels": self.levels,
            "increments_per_request": self.increments,
            "records_check": self.check,
            "open_loop": self.run.as_dict(),
        }


Result = Peak | Fixed


@dataclass
class Bench:
    args: argparse.Namespace
    private: h.Private
    written: Written
    log_dir: Path
    vegeta: str
    scripts: dict[str, Path] = field(default_factory=dict)

    def spawner(self, side: str, log: Path) -> Callable[[int], Awaitable[h.Child]]:
        async def spawn(port: int) -> h.Child:
            if side == "ours":
                more = {"DISTCOUNT_HTTP_HOST": "127.0.0.1", "DISTCOUNT_HTTP_PORT": str(port)}
                return await h.spawn_service("ingress", self.private.env(more), log)
            app = h.BENCH_DIR / f"{side}_app.py"
            env = self.private.env({}) if side == "naive" else h.child_env({})
            return await h.Child.spawn(
                f"{side} app", [h.PYTHON, str(app), "--port", str(port)], env, log
            )

        return spawn

    def wrk(self, payload: Payload) -> h.Wrk:
        a = self.args
        if payload.name not in self.scripts:
            script = self.log_dir / f"{payload.name}.lua"
            lua = _LUA.replace("PATH", payload.path).replace("KEYS", str(a.keys))
            script.write_text(lua.replace("BATCH", str(payload.batch)), encoding="utf-8")
            self.scripts[payload.name] = script
        return h.Wrk(
            a.threads,
            a.connections,
            a.duration,
            a.warmup,
            a.wrk_timeout_s,
            a.keys,
            self.scripts[payload.name],
            a.ready_timeout_s,
            a.wait_quiet_s,
        )

    async def peak(self, payload: Payload, side: str, index: int) -> Peak:
        log = self.log_dir / f"run{index}-{payload.name}-{side}-peak.log"
        count = None if side == "bare" else self.written
        h.say(f"run {index} {side}: peak of {payload.name} ({payload.path}), closed loop")
        load = await h.serve_and_load(
            side, index, self.spawner(side, log), self.wrk(payload), count
        )
        if load.records_check is not None:
            # the harness counts requests; a request here carries `increments` records
            n = payload.increments
            load.records_check = records_check(
                load.records_check["records_added"],
                load.ok * n,
                (self.args.connections + load.non_2xx) * n,
            )
        return Peak(payload.name, side, index, load, payload.increments)

    def open_loop(self, payload: Payload, label: str, rate: float) -> vg.Load:
        a = self.args
        return vg.Load(
            f"POST {payload.path} ({payload.name}, {label})",
            rate,
            a.duration,
            a.warmup,
            max_workers=a.max_in_flight,
        )

    async def fixed_rates(
        self, payload: Payload, side: str, index: int, rates: dict[str, float]
    ) -> AsyncIterator[Fixed]:
        """One server, started afresh, loaded at each of `rates` (level -> requests/s) in turn;
        levels of the same rate share one run."""
        runs: dict[float, list[str]] = {}
        for level, rate in rates.items():
            runs.setdefault(rate, []).append(level)
        log = self.log_dir / f"run{index}-{payload.name}-{side}-openloop.log"
        async with h.served(
            side,
            index,
            self.spawner(side, log),
            ready_timeout_s=self.args.ready_timeout_s,
            wait_quiet_s=self.args.wait_quiet_s,
        ) as (child, base, idle):
            targets = self.log_dir / f"run{index}-{payload.name}-{side}-targets.jsonl"
            held = vg.write_targets(
                targets,
                base + payload.path,
                keys=self.args.keys,
                batch=payload.batch,
                count=self.args.targets,
                seed=index,
            )
            h.say(f"run {index} {side}: {held:,} distinct {payload.name} bodies for vegeta")
            try:
                for rate, levels in runs.items():
                    before = None if side == "bare" else await self.written()
                    load = self.open_loop(payload, "/".join(levels), rate)
                    name = f"{side} {payload.name} {'+'.join(levels)}"
                    run = await vg.drive(
                        name, index, load, self.vegeta, targets, log_dir=self.log_dir, server=child
                    )
                    run.background_busy = idle
                    fixed = Fixed(payload.name, side, index, levels, run, payload.increments)
                    if before is not None:
                        r, w, n = run.result, run.warmup, payload.increments
                        answered = (r["answered_2xx"] + w["answered_2xx"]) * n
                        failed = (r["errors"] + w["errors"]) * n
                        fixed.check = records_check(await self.written() - before, answered, failed)
                        h.say(f"run {index} {side}: records check {_check_cell(fixed.check)}")
                    yield fixed
            finally:
                # up to 16 MB for batches, one a side and round: not kept with the logs
                targets.unlink(missing_ok=True)


async def round_of(b: Bench, payload: Payload, index: int) -> AsyncIterator[Result]:
    order = h.side_order(SIDES, index, alternate=True)
    peaks: dict[str, float] = {}
    for side in order:
        peak = await b.peak(payload, side, index)
        peaks[side] = peak.requests_per_s
        yield peak
    same = SAME_SHARE * min(peaks.values())
    h.say(
        f"run {index} {payload.name}: peaks "
        + ", ".join(f"{side} {rps:,.0f}/s" for side, rps in peaks.items())
        + f"; same rate {same:,.0f}/s"
    )
    for side in order:
        rates = {level: share * peaks[side] for level, share in LEVELS.items()}
        rates[SAME] = same if peaks[side] != min(peaks.values()) else rates["80%"]
        async for fixed in b.fixed_rates(payload, side, index, rates):
            yield fixed


# --- the report


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _check_cell(check: dict[str, Any] | None) -> str:
    if check is None:
        return "n/a"
    return (
        f"{'ok' if check['consistent'] else 'MISMATCH'}: +{check['records_added']:,} records, "
        f"{check['extra_records']:+,} vs 2xx"
    )


def _latency_cell(figures: dict[str, Any] | None) -> str:
    if figures is None:
        return "-"
    return f"{_ms(figures['p50_ms'])} / {_ms(figures['p99_ms'])} @ {figures['rate']:,.0f}/s"


def _cpu_per_increment(cpu_s: float | None, answered: int, increments: int) -> float | None:
    return None if cpu_s is None or not answered else cpu_s / (answered * increments) * 1e6


def _peak_row(p: Peak) -> list[object]:
    lat, r = p.load.latency_us, p.load
    return [
        *(p.index, p.side, "peak (wrk)", "-", f"{p.requests_per_s:,.0f}"),
        f"{p.increments_per_s:,.0f}",
        *(_ms(lat[q] / 1000) for q in ("p50", "p90", "p99", "p999", "max")),
        r.non_2xx + r.socket_errors,
        h.fmt(_cpu_per_increment(r.server_cpu_s, r.ok, p.increments), 1),
        f"wrk {r.wrk_cpu_s:.1f}",
        "-",
        *(h.pct(r.background_busy), h.pct(r.machine_busy), "-", _check_cell(p.check)),
    ]


def _lag_cell(run: vg.VegetaRun) -> str:
    lag = run.result["send_lag_ms"]
    if lag is None:
        return "-"
    return f"{lag['max']:.2f}" + (
        "" if run.open_loop else f" NOT open loop ({run.result['behind']})"
    )


def _fixed_row(f: Fixed) -> list[object]:
    r = f.run.result
    answered = r["achieved_per_s"]
    return [
        *(f.index, f.side, "/".join(f.levels), f"{f.run.load.rate:,.0f}", f"{answered:,.0f}"),
        f"{answered * f.increments:,.0f}",
        *(_ms(f.run.latency(q)) for q in ("p50", "p90", "p99", "p999", "max")),
        f.errors,
        h.fmt(_cpu_per_increment(f.run.server_cpu_s, r["answered_2xx"], f.increments), 1),
        f"vegeta {f.run.vegeta_cpu_s:.1f}",
        _lag_cell(f.run),
        *(h.pct(f.run.background_busy), h.pct(f.run.machine_busy), h.pct(f.run.others_busy)),
        _check_cell(f.check),
    ]


def summarize(results: list[Result]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(peaks, openloop) as the module's docstring gives them: medians over the rounds."""
    peaks: dict[str, Any] = {}
    openloop: dict[str, Any] = {}
    for payload in PAYLOADS:
        for side in SIDES:
            mine = [r for r in results if r.payload == payload.name and r.side == side]
            runs = [r for r in mine if isinstance(r, Peak)]
            if runs:
                peaks.setdefault(payload.name, {})[side] = {
                    "requests_per_s": h.median([r.requests_per_s for r in runs]),
                    "increments_per_s": h.median([r.increments_per_s for r in runs]),
                }
            for level in (*LEVELS, SAME):
                at = [r for r in mine if isinstance(r, Fixed) and level in r.levels]
                if at:
                    figures = {"rate": h.median([r.run.load.rate for r in at])}
                    for q in ("p50", "p90", "p99", "p999", "max"):
                        figures[f"{q}_ms"] = h.median([r.run.latency(q) for r in at])
                    figures["errors"] = sum(r.errors for r in at)
                    openloop.setdefault(payload.name, {}).setdefault(side, {})[level] = figures
    return peaks, openloop


def targets(peaks: dict[str, Any], openloop: dict[str, Any]) -> list[dict[str, Any]]:
    def get(table: dict[str, Any], *path: str) -> float:
        for name in path:
            table = table.get(name, {})
        return float(table) if isinstance(table, int | float) else float("nan")

    def target(name: str, figure: float, limit: float, floor: bool, unit: str) -> dict[str, Any]:
        met = figure >= limit if floor else figure <= limit  # NaN (not measured) meets nothing
        return {
            "name": name,
            "figure": figure,
            "limit": limit,
            "floor": floor,
            "unit": unit,
            "met": met,
        }

    def rps(payload: str, side: str) -> float:
        return get(peaks, payload, side, "requests_per_s")

    def ips(payload: str, side: str) -> float:
        return get(peaks, payload, side, "increments_per_s")

    def p99(side: str) -> float:
        return get(openloop, "single", side, SAME, "p99_ms")

    return [
        target(
            "single: ours / bare peak requests/s",
            rps("single", "ours") / rps("single", "bare"),
            0.85,
            True,
            "x",
        ),
        target(
            "single: ours / naive peak requests/s",
            rps("single", "ours") / rps("single", "naive"),
            1.5,
            True,
            "x",
        ),
        target(
            "single: ours / naive p99 at the same rate", p99("ours") / p99("naive"), 0.5, False, "x"
        ),
        target(
            "batch1000: ours peak increments/s",
            ips("batch1000", "ours"),
            250_000,
            True,
            "increments/s",
        ),
        target(
            "batch100 / single: ours peak increments/s",
            ips("batch100", "ours") / ips("single", "ours"),
            5.0,
            True,
            "x",
        ),
    ]


def report(session: h.Session, meta: dict[str, Any], rounds: h.Rounds[Result]) -> int:
    results, error = rounds.results, rounds.error
    if not any(isinstance(r, Peak) for r in results):
        return session.failed(meta, [r.as_dict() for r in results], [], error or "no runs")
    peaks, openloop = summarize(results)
    goals = targets(peaks, openloop)
    # every run of naive and ours checked, and right
    checks_ok = all(r.check is None or r.check["consistent"] for r in results) and all(
        r.check is not None for r in results if r.side != "bare"
    )
    passed = all(t["met"] for t in goals) and checks_ok
    summary: dict[str, Any] = {
        "verdict": h.verdict(passed, error),
        "error": error,
        "targets": goals,
        "checks_ok": checks_ok,
        "check": CHECK,
        "peaks": peaks,
        "openloop": openloop,
    }
    a = meta["load"]
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**. The load generator (wrk, or vegeta "
        "for the open loop), the server under test, the Kafka broker and PostgreSQL share "
        "these cores: the figures are the stack's on this box, and the ratios are what carries "
        "over.",
        "",
        f"Sides: bare = benchmarks/bare_app.py (orjson parse, 202, no Kafka); naive = "
        "benchmarks/naive_app.py (a plain AIOKafkaProducer, acks=1, `send_and_wait` per request, "
        "a batch sent item by item then awaited); ours = `distcount ingress` (idempotent "
        "producer for singles, one transaction per group of batches). All: uvicorn, uvloop, "
        f"httptools, one worker. Topic of {meta['partitions']} partitions, keys "
        f"`k<0..{a['keys'] - 1}>`.",
        "",
        f"Peak: `wrk -t{a['threads']} -c{a['connections']} -d{a['duration_s']}s` after "
        f"{a['warmup_s']} s of warm-up, each server started afresh. Open loop: {a['duration_s']} s "
        f"after {a['warmup_s']} s of warm-up at the same rate, by vegeta (`-rate`, up to "
        f"{a['max_in_flight']:,} requests in flight, keep-alive, round-robin over up to "
        f"{a['targets']:,} distinct bodies), every request timed from its slot in vegeta's "
        "schedule (coordinated omission corrected), at 50 % and 80 % of the side's own peak of "
        f"the round and at {SAME_SHARE:.0%} of the slowest side's peak (same-rate). A run whose "
        f"worst send lag behind the schedule is above {vg.LAG_LIMIT_MS:g} ms is marked NOT open "
        f"loop. {a['repeat']} rounds, the order of the sides alternating.",
        "",
    ]
    header = [
        *("run", "side", "load", "rate/s", "answered req/s", "increments/s"),
        *("p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"),
        *("server CPU µs/increment", "load CPU s", "send lag max ms"),
        *("busy before", "busy during", "others during"),
        "records vs 2xx",
    ]
    for payload in PAYLOADS:
        mine = [r for r in results if r.payload == payload.name]
        if not mine:
            continue
        rows = [_peak_row(r) if isinstance(r, Peak) else _fixed_row(r) for r in mine]
        med = []
        for side in SIDES:
            pk = peaks.get(payload.name, {}).get(side)
            ol = openloop.get(payload.name, {}).get(side, {})
            if pk is None:
                continue
            med.append(
                [
                    side,
                    f"{pk['requests_per_s']:,.0f}",
                    f"{pk['increments_per_s']:,.0f}",
                    *(_latency_cell(ol.get(level)) for level in (*LEVELS, SAME)),
                ]
            )
        md += [
            f"## {payload.name}: `POST {payload.path}`, {payload.increments:,} increment"
            + ("s" if payload.increments > 1 else "")
            + " a request",
            "",
            h.table(header, rows),
            "",
            h.table(
                [
                    *("median", "peak requests/s", "peak increments/s"),
                    *(f"p50 / p99 ms at {lv}" for lv in (*LEVELS, SAME)),
                ],
                med,
            ),
            "",
        ]
    lagging = [r for r in results if isinstance(r, Fixed) and not r.run.open_loop]
    if lagging:
        md += [
            f"**{len(lagging)} open-loop run(s) where vegeta fell more than "
            f"{vg.LAG_LIMIT_MS:g} ms behind its schedule, or did not send all of it** (marked "
            'NOT open loop): "server behind" = every one of vegeta\'s workers waited for an '
            "answer (the server could not keep up with the rate; the requests not sent are "
            'errors), "vegeta late" = vegeta itself was short of CPU. Their latencies include '
            "the lag; read them with the load CPU and busy columns.",
            "",
        ]
    md += [
        "## Targets",
        "",
        h.table(
            ["target", "figure", "limit", "met"],
            [
                [
                    t["name"],
                    f"{t['figure']:,.3f}"
                    if t["unit"] == "x"
                    else f"{t['figure']:,.0f} {t['unit']}",
                    ("≥ " if t["floor"] else "≤ ")
                    + (f"{t['limit']:g}" if t["unit"] == "x" else f"{t['limit']:,.0f}"),
                    "yes" if t["met"] else "NO",
                ]
                for t in goals
            ],
        ),
        "",
        f"Records check ({CHECK}): {'every run ok' if checks_ok else 'FAILED (see the tables)'}.",
        "",
        f"**Headline: {sum(t['met'] for t in goals)} of {len(goals)} targets met; "
        f"{summary['verdict']}**",
        *h.error_lines(error),
        "",
        "Busy before / during = the whole machine's CPU use in the second before the server "
        "started / during the measured load; others during = the part neither the server nor "
        "the load generator used (Kafka, PostgreSQL, other processes). Server CPU µs/increment = "
        "the server process's CPU time during the measured load over the increments answered "
        "2xx. Load CPU s = wrk's or vegeta's CPU seconds during the measured load (vegeta's "
        "includes reading its targets file). Send lag max = the latest vegeta sent a request "
        "behind its slot; latencies are timed from the slot, so they include it.",
    ]
    data = {**meta, "runs": [r.as_dict() for r in results], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("ingress_openloop", "Ingress benchmark, peak and open loop")
    session.log_dir.mkdir(parents=True, exist_ok=True)
    endpoints = h.Endpoints.load()
    payloads = [p for p in PAYLOADS if p.name in args.payloads.split(",")]
    h.say(
        f"ingress open-loop benchmark: nproc {session.machine['nproc']}; payloads "
        f"{', '.join(p.name for p in payloads)}; {args.duration} s a load, {args.repeat} rounds; "
        f"{endpoints.describe()}"
    )
    rounds: h.Rounds[Result] = h.Rounds()
    async with h.private_stack(endpoints, "bench.ingress_openloop", args.partitions) as private:
        pg = await h.postgres_facts(private.database.owner_url)
        written = Written(endpoints.kafka_bootstrap, private.topic, args.partitions)
        b = Bench(args, private, written, session.log_dir, args.vegeta)

        async def round_(index: int) -> AsyncIterator[Result]:
            for payload in payloads:
                h.say(f"round {index}: {payload.name}")
                async for result in round_of(b, payload, index):
                    yield result

        await rounds.play(args.repeat, round_)
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        postgres=pg,
        partitions=args.partitions,
        load={
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "wrk_timeout_s": args.wrk_timeout_s,
            "keys": args.keys,
            "openloop_tool": f"vegeta ({vg.MODULE}@{vg.VERSION} if installed here)",
            "vegeta": args.vegeta,
            "max_in_flight": args.max_in_flight,
            "targets": args.targets,
            "lag_limit_ms": vg.LAG_LIMIT_MS,
            "repeat": args.repeat,
            "payloads": [asdict(p) for p in payloads],
        },
        logs=str(session.log_dir),
    )
    return report(session, meta, rounds)


def arguments() -> argparse.Namespace:
    parser = h.parser(
        "The ingress's writes against a bare handler and a naive one: peak and open loop.",
        repeat=2,
        repeat_help="rounds (every side's peak, then its open-loop loads), interleaved",
    )
    h.add_wrk_options(parser)
    parser.set_defaults(duration=5, warmup=1)
    add = parser.add_argument
    add("--partitions", type=int, default=6, help="partitions of the private topic")
    add(
        "--max-in-flight",
        type=int,
        default=1024,
        help="open loop: vegeta -max-workers, the requests in flight at most (beyond, vegeta "
        "falls behind its schedule, and the run is flagged)",
    )
    add(
        "--targets",
        type=int,
        default=10_000,
        help="open loop: distinct request bodies vegeta goes round (fewer for big batches)",
    )
    add(
        "--payloads",
        default=",".join(p.name for p in PAYLOADS),
        help="a comma-separated subset of single, batch100, batch1000",
    )
    quick = ", ".join(f"--{k} {v}" for k, v in QUICK.items())
    add("--quick", action="store_true", help=f"a quick look: {quick}")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    h.at_least(parser, args, 1, "--threads", "--connections", "--duration", "--repeat")
    h.at_least(parser, args, 1, "--partitions", "--max-in-flight", "--targets")
    h.at_least(parser, args, max(p.batch for p in PAYLOADS), "--keys")
    unknown = set(args.payloads.split(",")) - {p.name for p in PAYLOADS}
    if unknown:
        parser.error(f"--payloads: unknown {', '.join(sorted(unknown))}")
    h.check_wrk_options(parser, args)
    args.vegeta = vg.find_vegeta()
    return args


def main() -> None:
    args = arguments()
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
