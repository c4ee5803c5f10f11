"""End to end under steady load: from `POST /increment` to the value visible through a plain
`GET /counters/{key}`, at each flush interval asked for (1 s and 5 s by default).

For each interval, on a private topic (6 partitions) and database: `distcount aggregator` with
that `DISTCOUNT_FLUSH_INTERVAL_MS` (its bucket width follows it) and `distcount ingress`, on a
consumer group of their own. A steady background load, `POST /increment` at `--rate` over
`--keys` keys (values 1 to 9), open loop, runs from a child process through the whole
measurement. After a warm-up (every partition flushed once, so that reads carry an as_of, then
`--warmup-flushes` more flush intervals), probes leave at `--probes-per-s` on average
(Poisson arrivals, so that they meet the flush ticks at every phase) for `--duration` s,
from a child process of their own (benchmarks/_end_to_end_driver.py): each on a fresh key of its
own, `POST /increment` with value i + 1, then `GET /counters/{key}` without `?after=` (what a
reader holding no token sees) every `--poll-ms` until the answer holds that value. A probe's
latency runs from just before its POST to the answer of the first GET that showed it, so it
overstates the moment of visibility by up to one poll gap plus one GET round trip: the poll
resolution, reported beside it.

Target per interval: **p99 <= interval + 100 ms**. A flush on a timer makes a write wait for
the next tick (up to a whole interval, uniformly), then for the flush of its partition; the
report splits each probe's time at the tick that made it visible (the aggregator flushes on ticks
aligned to multiples of the interval, in epoch time, so the tick is known from the POST's wall
time): the POST, the wait for the tick, and the tick to visible (the flush itself, plus the poll
resolution). The aggregator runs with console metrics at a sample rate of 1, so its own flush
timings are reported too (one partition's transaction; a tick runs those of the dirty partitions
concurrently over its connection pool).

After the load stops, once the aggregator has flushed the whole topic: every increment answered
202 must be in PostgreSQL exactly once, key by key (`counter_totals` against the sums the drivers
counted, background and probes; `sum(counter_events.delta)` must equal the totals' sum, and the
topic's records the requests sent). A request with no answer or a 5xx may or may not have been
written: its value is allowed on top (and counted in the report); with none of them the check is
exact.

The JSON report's `data["summary"]`:

    {"verdict": "PASS" | "FAIL" | "ERROR", "error": str | None,
     "targets": [{"name": "p99 POST to visible, flush 1 s", "figure": <p99 ms>,
                  "limit": <interval + 100>, "floor": False, "unit": "ms", "met": bool}, ...],
     "checks_ok": bool, "check": "<what was checked, one line>",
     "intervals": {"1000": {"probes": int, "visible": int,
                            "p50_ms", "p90_ms", "p99_ms", "max_ms": float,
                            "p99_minus_interval_ms": float, "load_per_s": float,
                            "latencies_ms": [every visible probe's latency, in send order]},
                   "5000": {...}}}

Everything else (each driver's figures, the split of the time, the machine's load, every
probe's timings) is under `data["intervals"]`.

    .venv/bin/python benchmarks/end_to_end.py [--duration 60] [--rate 1000] [--probes-per-s 5]
    .venv/bin/python benchmarks/end_to_end.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

import harness as h
from harness._machine import busy_between, cpu_jiffies

TARGET_MARGIN_MS = 100.0
DRIVER = h.BENCH_DIR / "_end_to_end_driver.py"
LOAD_PREFIX = "bg-"
PROBE_PREFIX = "probe-"
QUICK = {"duration": 12.0, "warmup_flushes": 1}
# one line of the aggregator's console metrics: "  aggregator.flush.duration{reason:tick}  n=6
# p50 3.1 ms  p99 5.0 ms  max 5.0 ms"
_FLUSH_LINE = re.compile(
    r"aggregator\.flush\.duration\{reason:tick\}\s+n=(\d+).*?p50 ([\d,.]+) ms\s+"
    r"p99 ([\d,.]+) ms\s+max ([\d,.]+) ms"
)
_NPROC = len(os.sched_getaffinity(0))


@dataclass
class Measured:
    """One flush interval's run: what the drivers reported, the check, the machine's load."""

    interval_ms: int
    probes: dict[str, Any] = field(default_factory=dict)  # the probe driver's figures
    load: dict[str, Any] = field(default_factory=dict)  # the steady driver's figures
    probe_rows: list[dict[str, Any]] = field(default_factory=list)  # every probe's timings
    check: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    flush_ms: dict[str, Any] | None = None  # the aggregator's own flush timer, when measuring
    warmup_s: float = 0.0

    def latencies_ms(self) -> list[float]:
        return [p["visible_s"] * 1000 for p in self.probe_rows if p["outcome"] == "visible"]


def quantile(values: list[float], q: float) -> float:
    """Nearest rank, as the drivers compute theirs; nan if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered) - 1e-9) - 1)]


def split(m: Measured) -> dict[str, list[float]]:
    """Each visible probe's time cut at the flush tick that made it visible: the POST, the wait
    from its answer to that tick, the tick to the GET that showed it; and the poll bracket (the
    last GET that missed it to the one that showed it). Ticks are multiples of the interval in
    epoch milliseconds (`next_tick_ms` in the aggregator), on the same clock as the probes'."""
    interval = m.interval_ms
    parts: dict[str, list[float]] = {
        "post": [],
        "wait_for_tick": [],
        "tick_to_visible": [],
        "bracket": [],
        "later_tick": [],
    }
    for p in m.probe_rows:
        if p["outcome"] != "visible":
            continue
        posted_ms = (p["wall_s"] + p["post_s"]) * 1000
        visible_ms = (p["wall_s"] + p["visible_s"]) * 1000
        first_tick = (posted_ms // interval + 1) * interval
        # a record fetched after its first tick waits for a later one
        later = max(0, int((visible_ms - first_tick) // interval))
        tick = first_tick + later * interval
        parts["post"].append(p["post_s"] * 1000)
        parts["wait_for_tick"].append(tick - posted_ms)
        parts["tick_to_visible"].append(visible_ms - tick)
        parts["later_tick"].append(float(later))
        since_miss = p["visible_s"] - (p["last_miss_s"] if p["last_miss_s"] is not None else 0.0)
        parts["bracket"].append(since_miss * 1000)
    return parts


# -- one interval ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    args: argparse.Namespace
    endpoints: h.Endpoints
    log_dir: Path


async def measure(b: Bench, interval_ms: int) -> Measured:
    a = b.args
    m = Measured(interval_ms)
    name = f"{interval_ms}ms"
    async with h.private_stack(b.endpoints, f"bench.e2e{interval_ms}", a.partitions) as private:
        group = f"bench-e2e-{h.suffix()}"
        services = {
            "DISTCOUNT_GROUP_ID": group,
            "DISTCOUNT_FLUSH_INTERVAL_MS": str(interval_ms),
            "DISTCOUNT_LOG_LEVEL": "info",
        }
        # the aggregator's own flush timings, every one of them (sample rate 1)
        metrics = {
            "DISTCOUNT_METRICS": "console",
            "DISTCOUNT_METRICS_SAMPLE_RATE": "1",
            "DISTCOUNT_METRICS_INTERVAL_MS": str(max(5000, 2 * interval_ms)),
        }

        async def ingress(port: int) -> h.Child:
            more = {"DISTCOUNT_HTTP_HOST": "127.0.0.1", "DISTCOUNT_HTTP_PORT": str(port)}
            env = private.env({**services, **more})
            return await h.spawn_service("ingress", env, b.log_dir / f"{name}-ingress.log")

        # the ingress first: `served` samples how busy the machine is before it starts anything
        async with h.served(
            f"flush {interval_ms} ms",
            1,
            ingress,
            ready_timeout_s=a.ready_timeout_s,
            wait_quiet_s=a.wait_quiet_s,
        ) as (server, base, idle):
            m.machine["busy_before"] = idle
            h.say(f"flush {interval_ms} ms: starting `distcount aggregator` (group {group})")
            env = private.env({**services, **metrics})
            aggregator = await h.spawn_service(
                "aggregator", env, b.log_dir / f"{name}-aggregator.log"
            )
            try:
                await aggregator.wait_for_line(
                    lambda t: "assigned partitions" in t, a.ready_timeout_s
                )
                await under_load(
                    b,
                    m,
                    private=private,
                    group=group,
                    base=base,
                    server=server,
                    aggregator=aggregator,
                )
            finally:
                await aggregator.stop()
    return m


def driver_spec(b: Bench, name: str, mode: str, base: str, **more: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "base_url": base,
        "raw_out": str(b.log_dir / f"{name}-{mode}.json"),
        **more,
    }


async def spawn_driver(b: Bench, name: str, spec: dict[str, Any]) -> h.Child:
    def relay(line: h.Line) -> None:
        if line.text.startswith("progress "):
            h.say(f"  {name} {spec['mode']}: {line.text.removeprefix('progress ')}")
        elif line.stream == "err":
            h.say(f"  {name} {spec['mode']} driver stderr: {line.text}")

    return await h.Child.spawn(
        f"{spec['mode']} driver ({name})",
        [h.PYTHON, str(DRIVER), "--spec", json.dumps(spec)],
        h.child_env({}),
        b.log_dir / f"{name}-{spec['mode']}.log",
        relay,
    )


def read_json(path: str) -> Any:
    """A driver's raw figures (small files, read once the driver is done)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def finished(child: h.Child) -> dict[str, Any]:
    line = child.first_line(lambda t: t.startswith("done "))
    if line is None:
        raise child.exited()
    figures: dict[str, Any] = json.loads(line.text.removeprefix("done "))
    return figures


async def under_load(
    b: Bench,
    m: Measured,
    *,
    private: h.Private,
    group: str,
    base: str,
    server: h.Child,
    aggregator: h.Child,
) -> None:
    """The steady load, the warm-up, the probes, then the load stopped and the totals checked."""
    a = b.args
    name = f"{m.interval_ms}ms"
    probe_timeout_s = 3 * m.interval_ms / 1000 + 10
    load_spec = driver_spec(
        b,
        name,
        "steady",
        base,
        rate=a.rate,
        keys=a.keys,
        prefix=LOAD_PREFIX,
        seed=m.interval_ms,
        timeout_s=10.0,
        max_in_flight=1000,
        # a bound should this script die without stopping it (it runs in a session of its own)
        max_duration_s=a.duration + probe_timeout_s + 300,
    )
    h.say(f"flush {m.interval_ms} ms: steady load {a.rate:,}/s over {a.keys:,} keys")
    load = await spawn_driver(b, name, load_spec)
    try:
        await load.wait_for_line(lambda t: t == "started", 30)
        warm_started = time.monotonic()
        await warm_up(private, group, a, m.interval_ms, aggregator)
        m.warmup_s = time.monotonic() - warm_started
        h.say(
            f"flush {m.interval_ms} ms: warmed up in {m.warmup_s:.1f} s; probes at "
            f"{a.probes_per_s:g}/s for {a.duration:g} s, GET every {a.poll_ms:g} ms"
        )
        probe_spec = driver_spec(
            b,
            name,
            "probes",
            base,
            rate=a.probes_per_s,
            duration_s=a.duration,
            prefix=PROBE_PREFIX,
            poll_ms=a.poll_ms,
            timeout_s=probe_timeout_s,
        )
        children = {"ingress": server, "aggregator": aggregator, "steady driver": load}
        cpu_before = {label: c.cpu_seconds() for label, c in children.items()}
        jiffies = cpu_jiffies()
        prober = await spawn_driver(b, name, probe_spec)
        try:
            await prober.wait_for_line(
                lambda t: t.startswith("done "), a.duration + probe_timeout_s + 60
            )
        finally:
            await prober.stop()
        m.machine["busy_during"] = busy_between(jiffies, cpu_jiffies())
        m.machine["cpu_s"] = {
            label: after - before
            for label, c in children.items()
            if (before := cpu_before[label]) is not None and (after := c.cpu_seconds()) is not None
        }
        m.probes = finished(prober)
        m.machine["cpu_s"]["probes driver"] = m.probes["driver_cpu_s"]
        m.flush_ms = flush_timings(aggregator, prober)
    finally:
        await load.stop()
    m.load = finished(load)
    m.machine["others_busy"] = others_busy(m)
    m.probe_rows = read_json(probe_spec["raw_out"])["probes"]
    sums = read_json(load_spec["raw_out"])
    p, lat = m.probes, m.latencies_ms()
    h.say(
        f"flush {m.interval_ms} ms: {p['visible']:,}/{p['probes']:,} probes visible, p50 "
        f"{quantile(lat, 0.5):,.0f} ms, p99 {quantile(lat, 0.99):,.0f} ms; load "
        f"{m.load['accepted_per_s']:,.0f}/s accepted; probes' GETs {p['gets_per_s']:,.0f}/s"
    )
    m.check = await check_totals(private, group, m, sums, aggregator)


async def warm_up(
    private: h.Private, group: str, a: argparse.Namespace, interval_ms: int, aggregator: h.Child
) -> None:
    """Until every partition has been flushed once under the load (reads then carry an as_of),
    then `--warmup-flushes` more intervals."""
    conn = await asyncpg.connect(private.database.owner_url, timeout=10)
    try:
        deadline = time.monotonic() + 60 + 3 * interval_ms / 1000
        while (
            await conn.fetchval(
                "SELECT count(*) FROM consumer_offsets WHERE group_id = $1 AND as_of IS NOT NULL",
                group,
            )
            < a.partitions
        ):
            if not aggregator.running():
                raise aggregator.exited()
            if time.monotonic() > deadline:
                raise TimeoutError("the aggregator has not flushed every partition within 60 s")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    await asyncio.sleep(a.warmup_flushes * interval_ms / 1000)


def flush_timings(aggregator: h.Child, prober: h.Child) -> dict[str, Any] | None:
    """The aggregator's own `aggregator.flush.duration` (tick flushes, one partition's
    transaction each) from the console blocks printed while the probes ran: p50 is the median of
    the blocks' p50, p99 and max the largest of theirs. Each block covers the metrics interval
    before it, so the first may reach back into the warm-up."""
    start, end = prober.spawned_at, prober.lines[-1].at if prober.lines else time.monotonic()
    blocks = [
        match
        for line in aggregator.lines
        if start <= line.at <= end + 1 and (match := _FLUSH_LINE.search(line.text))
    ]
    if not blocks:
        return None

    def number(text: str) -> float:
        return float(text.replace(",", ""))

    return {
        "blocks": len(blocks),
        "flushes": sum(int(b[1]) for b in blocks),
        "p50_ms": h.median([number(b[2]) for b in blocks]),
        "p99_ms": max(number(b[3]) for b in blocks),
        "max_ms": max(number(b[4]) for b in blocks),
    }


def others_busy(m: Measured) -> float | None:
    """The share of the machine busy during the probes with none of the benchmark's processes:
    PostgreSQL, Kafka, and whatever else runs here."""
    busy: float | None = m.machine.get("busy_during")
    span = float(m.probes.get("span_s", 0.0))
    if busy is None or span <= 0:
        return None
    ours = float(sum(m.machine["cpu_s"].values())) / (span * _NPROC)
    return max(0.0, busy - ours)


async def check_totals(
    private: h.Private,
    group: str,
    m: Measured,
    sums: dict[str, dict[str, int]],
    aggregator: h.Child,
) -> dict[str, Any]:
    """Once the aggregator has flushed every record of the topic: each key's total against what
    was accepted for it (exact unless some request's outcome is unknown)."""
    records = await h.settled_total(private.endpoints.kafka_bootstrap, private.topic)
    expected = dict.fromkeys(sums["accepted"].keys() | sums["uncertain"].keys(), 0)
    expected.update(sums["accepted"])
    slack = dict(sums["uncertain"])
    probes_accepted = probes_unknown = 0
    for p in m.probe_rows:
        expected.setdefault(p["key"], 0)  # a probe refused must have written nothing
        if p["outcome"] == "POST failed" or p["outcome"].startswith("POST 5"):
            slack[p["key"]] = p["value"]
            probes_unknown += 1
        elif not p["outcome"].startswith("POST "):  # answered 202
            expected[p["key"]] = p["value"]
            probes_accepted += 1
    conn = await asyncpg.connect(private.database.owner_url, timeout=10)
    try:
        deadline = time.monotonic() + 60 + 2 * m.interval_ms / 1000
        offsets = "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1"
        while (flushed := int(await conn.fetchval(offsets, group))) < records:
            if time.monotonic() > deadline or not aggregator.running():
                break
            await asyncio.sleep(0.1)
        totals = {
            r["key"]: int(r["value"])
            for r in await conn.fetch("SELECT key, value FROM counter_totals")
        }
        events = int(await conn.fetchval("SELECT coalesce(sum(delta), 0) FROM counter_events"))
    finally:
        await conn.close()
    wrong = [
        f"{key}: {totals.get(key, 0)} for {want} accepted"
        + (f" (+ up to {slack[key]} unknown)" if key in slack else "")
        for key, want in sorted(expected.items())
        if not want <= totals.get(key, 0) <= want + slack.get(key, 0)
    ]
    wrong += [f"{key}: {value}, never sent" for key, value in totals.items() if key not in expected]
    load = m.load
    sent_low = load["accepted"] + probes_accepted
    # requests whose record may exist: no answer, or a 5xx (see the driver's `Steady`)
    unknown = sum(
        n
        for status, n in load["statuses"].items()
        if status not in ("202", "not sent") and not status.startswith("4")
    )
    sent_high = sent_low + unknown + probes_unknown
    check = {
        "records_in_topic": records,
        "offsets_flushed": flushed,
        "requests_accepted": sent_low,
        "requests_unknown": sent_high - sent_low,
        "keys_expected": len(expected),
        "keys_counted": len(totals),
        "sum_accepted": sum(expected.values()),
        "sum_unknown": sum(slack.values()),
        "sum_counted": sum(totals.values()),
        "sum_events": events,
        "wrong_keys": len(wrong),
        "wrong_sample": wrong[:5],
    }
    check["correct"] = (
        not wrong
        and flushed == records
        and sent_low <= records <= sent_high
        and events == check["sum_counted"]
    )
    h.say(
        f"flush {m.interval_ms} ms totals: {len(totals):,} keys, sum {check['sum_counted']:,} for "
        f"{check['sum_accepted']:,} accepted in {sent_low:,} requests; {records:,} records, "
        f"{flushed:,} flushed: " + ("correct" if check["correct"] else f"WRONG ({wrong[:3]})")
    )
    return check


# -- the report --------------------------------------------------------------------------------


def target_of(m: Measured) -> dict[str, Any]:
    """The interval's target: p99 of the probes seen, and every probe seen (a probe never
    visible has no latency to rank, so a p99 without it would flatter the run)."""
    limit = m.interval_ms + TARGET_MARGIN_MS
    p99 = quantile(m.latencies_ms(), 0.99)
    return {
        "name": f"p99 POST to visible, flush {m.interval_ms / 1000:g} s",
        "figure": p99,
        "limit": limit,
        "floor": False,
        "unit": "ms",
        "met": p99 <= limit and m.probes["visible"] == m.probes["probes"],
    }


def interval_summary(m: Measured) -> dict[str, Any]:
    lat = m.latencies_ms()
    p99 = quantile(lat, 0.99)
    return {
        "probes": m.probes["probes"],
        "visible": m.probes["visible"],
        "p50_ms": quantile(lat, 0.5),
        "p90_ms": quantile(lat, 0.9),
        "p99_ms": p99,
        "max_ms": max(lat, default=float("nan")),
        "p99_minus_interval_ms": p99 - m.interval_ms,
        "load_per_s": m.load["accepted_per_s"],
        "latencies_ms": lat,
    }


def _pair(values: list[float], *qs: float) -> str:
    return " / ".join(f"{quantile(values, q):,.0f}" for q in qs) if values else "-"


def _ms(figures: dict[str, Any] | None, *names: str) -> str:
    return "-" if not figures else " / ".join(f"{figures[n]:,.1f}" for n in names)


def report(
    session: h.Session, meta: dict[str, Any], done: list[Measured], error: str | None
) -> int:
    targets = [target_of(m) for m in done]
    checks_ok = bool(done) and all(m.check.get("correct") for m in done)
    wrong_answers = sum(m.probes["outcomes"].get("wrong value", 0) for m in done)
    checks_ok = checks_ok and wrong_answers == 0
    passed = bool(targets) and all(t["met"] for t in targets) and checks_ok
    check = (
        "after the load, every increment answered 202 (steady load and probes) is in "
        "counter_totals exactly once, key by key; sum(counter_events.delta) = sum of the totals; "
        "the topic's records = the requests accepted; no probe read a wrong value"
    )
    summary: dict[str, Any] = {
        "verdict": h.verdict(passed, error),
        "error": error,
        "targets": targets,
        "checks_ok": checks_ok,
        "check": check,
        "intervals": {str(m.interval_ms): interval_summary(m) for m in done},
    }
    a = meta["load"]
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**; PostgreSQL "
        f"{meta['postgres']['server_version']} (synchronous_commit "
        f"{meta['postgres']['synchronous_commit']}). Kafka, PostgreSQL, the ingress, the "
        "aggregator and both drivers share these cores.",
        "",
        f"Per flush interval, a private topic ({meta['partitions']} partitions) and database, one "
        "`distcount ingress` and one `distcount aggregator`. Steady load: `POST /increment` at "
        f"{a['rate']:,}/s over {a['keys']:,} keys, open loop, from a child process, through the "
        f"whole run. Probes: {a['probes_per_s']:g}/s for {a['duration_s']:g} s after the "
        f"warm-up (every partition flushed once, then {a['warmup_flushes']} more flush "
        f"interval{'' if a['warmup_flushes'] == 1 else 's'}), each "
        "on a fresh key: `POST /increment`, then a plain `GET /counters/{key}` (no `?after=`) "
        f"every {a['poll_ms']:g} ms until it holds the value; latency from just before the POST "
        "to the answer of the first GET that showed it.",
        "",
        h.table(
            [
                *("flush interval", "probes seen", "p50 ms", "p90 ms", "p99 ms", "max ms"),
                *("p99 - interval", "limit", "met", "load accepted/s", "probes' GET/s"),
            ],
            [
                [
                    f"{m.interval_ms:,} ms",
                    f"{s['visible']:,}/{s['probes']:,}",
                    *(f"{s[q]:,.0f}" for q in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
                    f"{s['p99_minus_interval_ms']:+,.0f} ms",
                    f"≤ {t['limit']:,.0f} ms",
                    "yes" if t["met"] else "**NO**",
                    f"{s['load_per_s']:,.0f}",
                    f"{m.probes['gets_per_s']:,.0f}",
                ]
                for m, s, t in zip(done, summary["intervals"].values(), targets, strict=True)
            ],
        ),
        "",
        "Where the time goes (ms; each probe cut at the flush tick that made it visible, ticks "
        "being multiples of the interval in epoch time):",
        "",
        h.table(
            [
                *("flush interval", "POST p50 / p99", "wait for the tick p50 / p99"),
                *("tick to visible p50 / p99 / max", "probes that waited a later tick"),
                *("aggregator flush, 1 partition, p50 / p99 / max",),
                *("poll gap p50 / p99", "GET p50 / p99", "last miss to hit p50 / p99"),
            ],
            [_split_row(m) for m in done],
        ),
        "",
        h.table(
            [
                *("flush interval", "busy before", "busy during", "others during"),
                *("CPU s during the probes", "steady POST p50 / p99 ms", "send lag p99 ms"),
                "steady failures",
            ],
            [_machine_row(m) for m in done],
        ),
        "",
        *(_check_line(m) for m in done),
        "",
        "**Headline: "
        + "; ".join(
            f"{t['name']} {t['figure']:,.0f} ms (limit {t['limit']:,.0f} ms"
            + ("" if t["met"] else ", MISSED")
            + ")"
            for t in targets
        )
        + f"; totals {'exact' if checks_ok else 'WRONG'}: {summary['verdict']}**",
        *h.error_lines(error),
        "",
        "Reading it: with a flush on a timer, a write waits for the next tick, anything from 0 "
        "to a whole interval (uniformly, so its p99 is about 0.99 of the interval), then for its "
        "partition's flush to commit (a tick runs the partitions' transactions concurrently, so "
        "the slowest of them sets when the last key shows). p99 minus the interval is "
        "therefore about the tick-to-visible time: the flush plus the poll resolution. A probe "
        "whose record reached the aggregator after its first tick's fetch "
        'waits one more interval ("waited a later tick"). Every latency overstates the moment '
        'of visibility by up to a poll gap plus a GET: "last miss to hit" brackets it. The '
        "aggregator's flush timer comes from its console metrics printed while the probes ran "
        "(the first block may reach back into the warm-up). Busy before / during = the whole "
        "machine's CPU use before the services started / while the probes ran; others during = "
        "the part of it none of this run's processes used.",
    ]
    data = {
        **meta,
        "intervals": [
            {
                "interval_ms": m.interval_ms,
                "warmup_s": m.warmup_s,
                "probes": m.probes,
                "steady": m.load,
                "split_ms": split(m),
                "aggregator_flush_ms": m.flush_ms,
                "machine": m.machine,
                "check": m.check,
                "probe_rows": m.probe_rows,
            }
            for m in done
        ],
        "summary": summary,
    }
    return session.finish(data, "\n".join(md))


def _split_row(m: Measured) -> list[object]:
    parts = split(m)
    p = m.probes
    return [
        f"{m.interval_ms:,} ms",
        _pair(parts["post"], 0.5, 0.99),
        _pair(parts["wait_for_tick"], 0.5, 0.99),
        _pair(parts["tick_to_visible"], 0.5, 0.99, 1.0),
        f"{sum(1 for n in parts['later_tick'] if n):,}",
        _ms(m.flush_ms, "p50_ms", "p99_ms", "max_ms"),
        _ms(p["poll_gap_ms"], "p50", "p99"),
        _ms(p["get_ms"], "p50", "p99"),
        _pair(parts["bracket"], 0.5, 0.99),
    ]


def _machine_row(m: Measured) -> list[object]:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in m.machine.get("cpu_s", {}).items())
    load = m.load
    failures = {k: v for k, v in load["statuses"].items() if k != "202"}
    return [
        f"{m.interval_ms:,} ms",
        h.pct(m.machine.get("busy_before")),
        h.pct(m.machine.get("busy_during")),
        h.pct(m.machine.get("others_busy")),
        cpu,
        _ms(load["latency_ms"], "p50", "p99"),
        _ms(load["send_lag_ms"], "p99"),
        ", ".join(f"{k}: {v:,}" for k, v in failures.items()) or "none",
    ]


def _check_line(m: Measured) -> str:
    c = m.check
    unknown = (
        f" (+ {c['requests_unknown']:,} requests of unknown outcome, sum {c['sum_unknown']:,})"
        if c["requests_unknown"]
        else ""
    )
    return (
        f"- Totals, flush {m.interval_ms:,} ms: {c['keys_counted']:,} keys sum "
        f"{c['sum_counted']:,} for {c['sum_accepted']:,} accepted in "
        f"{c['requests_accepted']:,} requests{unknown}; the topic holds "
        f"{c['records_in_topic']:,} records, {c['offsets_flushed']:,} flushed; events sum "
        f"{c['sum_events']:,}: **{'exact' if c['correct'] else 'WRONG'}**"
        + (f" ({'; '.join(c['wrong_sample'])})" if c["wrong_sample"] else "")
    )


# -- the run -----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("end_to_end", "End to end benchmark")
    endpoints = h.Endpoints.load()
    h.say(
        f"end-to-end benchmark: nproc {session.machine['nproc']}; flush intervals "
        f"{', '.join(f'{i} ms' for i in args.intervals)}; load {args.rate:,}/s, probes "
        f"{args.probes_per_s:g}/s for {args.duration:g} s each; {endpoints.describe()}"
    )
    pg = await h.postgres_facts(endpoints.migrate_database_url)
    b = Bench(args, endpoints, session.log_dir)
    done: list[Measured] = []
    error: str | None = None
    for interval_ms in args.intervals:
        try:
            done.append(await measure(b, interval_ms))
        except Exception as exc:  # report what was measured, and why the rest is missing
            error = f"flush {interval_ms} ms: {h.describe(exc)}"
            h.say(f"flush {interval_ms} ms failed: {exc}")
            break
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        postgres=pg,
        partitions=args.partitions,
        load={
            "rate": args.rate,
            "keys": args.keys,
            "probes_per_s": args.probes_per_s,
            "duration_s": args.duration,
            "poll_ms": args.poll_ms,
            "warmup_flushes": args.warmup_flushes,
            "intervals_ms": args.intervals,
        },
        logs=str(session.log_dir),
    )
    if not done:
        return session.failed(meta, [], [], error or "nothing measured")
    return report(session, meta, done, error)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="POST to visible, under steady load.")
    add = parser.add_argument
    add("--duration", type=float, default=60.0, help="seconds of probes per flush interval")
    add("--rate", type=int, default=1000, help="increments/s of the steady load")
    add("--keys", type=int, default=10_000, help="keys the steady load spreads over")
    add("--probes-per-s", type=float, default=5.0, help="probes a second")
    add("--poll-ms", type=float, default=10.0, help="a probe's GET every this many ms")
    add(
        "--intervals",
        default="1000,5000",
        help="flush intervals in ms, comma-separated (DISTCOUNT_FLUSH_INTERVAL_MS)",
    )
    add("--partitions", type=int, default=6, help="partitions of each private topic")
    add(
        "--warmup-flushes",
        type=int,
        default=2,
        help="flush intervals under load after every partition's first flush, before probing",
    )
    add("--ready-timeout-s", type=float, default=60.0, help="wait this long for the services")
    add(
        "--wait-quiet-s",
        type=float,
        default=60.0,
        help="before each interval, wait up to this long for other processes to leave the CPU",
    )
    quick = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in QUICK.items())
    add("--quick", action="store_true", help=f"a quick look: {quick}")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    try:
        args.intervals = [int(v) for v in args.intervals.split(",") if v.strip()]
    except ValueError:
        parser.error("--intervals must be whole milliseconds, comma-separated")
    if not args.intervals or min(args.intervals) < 10:
        parser.error("--intervals must name at least one interval of 10 ms or more")
    h.at_least(parser, args, 1, "--rate", "--keys", "--partitions")
    h.at_least(parser, args, 0, "--warmup-flushes")
    if args.duration <= 0 or args.probes_per_s <= 0 or args.poll_ms <= 0:
        parser.error("--duration, --probes-per-s and --poll-ms must be above 0")
    return args


def main() -> None:
    args = arguments()
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
