"""Soak: the whole pipeline for a long time at half its peak, aggregators killed now and then;
what the memory, the lag and the totals do over time.

On a private topic and database of the running stack: one `distcount ingress` and two
`distcount aggregator` processes in one group. First a short closed-loop peak of the ingress
(vegeta, as many requests as 64 workers get answered, single increments over `--keys` keys);
then an open-loop load at `--share` (half) of that peak for `--minutes`, as back-to-back vegeta
attacks of a minute each. Every `--kill-every-s` seconds one aggregator (in turn) gets SIGKILL
and is started again `--restart-after-s` later: its partitions go to the other and come back.
Every `--sample-s` seconds: each process's RSS, the consumer lag (records in the topic that
PostgreSQL has no offset past yet), and the records in the topic.

At the end, once the aggregators have caught up: every record in the topic counted once (the
sum of the totals, of the event log and of the stored offsets each equal the records written,
each increment being 1), and the 202 answers no more than those records (a 503 may still have
been written). Reports: a table per minute, and plots of RSS and lag over time.

    .venv/bin/python benchmarks/soak.py                 # 30 minutes
    .venv/bin/python benchmarks/soak.py --minutes 3 --kill-every-s 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

import harness as h
from harness._kafka import end_offsets, settled_total
from harness._process import free_port
from harness._report import RESULTS_DIR
from harness._vegeta import Load, attack, find_vegeta, write_targets

PEAK_S = 10
SEGMENT_S = 60
_OFFSETS = (
    "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = $1 AND topic = $2"
)


@dataclass
class Sample:
    at_s: float  # since the load began
    rss_mb: dict[str, float]
    records: int  # in the topic
    stored: int  # offsets PostgreSQL holds, summed
    lag: int


@dataclass
class Segment:
    index: int
    started_s: float
    result: dict[str, Any]


@dataclass
class Soak:
    args: argparse.Namespace
    private: h.Private
    log_dir: Path
    group: str
    samples: list[Sample] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    aggregators: dict[str, h.Child] = field(default_factory=dict)
    ingress: h.Child | None = None
    began: float = 0.0

    def env(self, **more: str) -> dict[str, str]:
        return self.private.env(
            {
                "DISTCOUNT_GROUP_ID": self.group,
                "DISTCOUNT_FLUSH_INTERVAL_MS": str(self.args.flush_interval_ms),
                "DISTCOUNT_LOG_LEVEL": "info",
                **more,
            }
        )

    async def start_aggregator(self, name: str) -> None:
        log = self.log_dir / f"{name}-{len(self.kills)}.log"
        self.aggregators[name] = await h.spawn_service("aggregator", self.env(), log)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def sample(soak: Soak, conn: asyncpg.Connection) -> Sample:
    ends = await end_offsets(soak.private.endpoints.kafka_bootstrap, soak.private.topic)
    records = sum(ends.values())
    stored = int(await conn.fetchval(_OFFSETS, soak.group, soak.private.topic))
    rss = {name: rss_mb(child.process.pid) for name, child in soak.aggregators.items()}
    if soak.ingress is not None:
        rss["ingress"] = rss_mb(soak.ingress.process.pid)
    return Sample(time.monotonic() - soak.began, rss, records, stored, max(0, records - stored))


async def sampler(soak: Soak, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
    while not stop.is_set():
        soak.samples.append(await sample(soak, conn))
        last = soak.samples[-1]
        h.say(
            f"{last.at_s / 60:5.1f} min: {last.records:,} records, lag {last.lag:,}, RSS "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(last.rss_mb.items()))
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), soak.args.sample_s)


async def killer(soak: Soak, stop: asyncio.Event) -> None:
    names = sorted(soak.aggregators)
    turn = 0
    while True:
        try:
            await asyncio.wait_for(stop.wait(), soak.args.kill_every_s)
            return
        except TimeoutError:
            pass
        name = names[turn % len(names)]
        turn += 1
        child = soak.aggregators[name]
        at = time.monotonic() - soak.began
        child.process.send_signal(signal.SIGKILL)
        await child.process.wait()
        h.say(f"{at / 60:5.1f} min: SIGKILL to {name}")
        await asyncio.sleep(soak.args.restart_after_s)
        soak.kills.append({"at_s": at, "aggregator": name})
        await soak.start_aggregator(name)


async def peak(vegeta: str, targets: Path, log_dir: Path) -> float:
    """Closed loop: what 64 workers get answered a second, single increments."""
    out = log_dir / "peak.bin"
    argv = [
        vegeta, "attack", "-format=json", f"-targets={targets}", "-rate=0",
        "-max-workers=64", f"-duration={PEAK_S}s", "-keepalive=true", "-max-body=0",
        f"-output={out}",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"vegeta attack failed: {err.decode()[:500]}")
    report = await asyncio.create_subprocess_exec(
        vegeta, "report", "-type=json", str(out), stdout=asyncio.subprocess.PIPE
    )
    text, _ = await report.communicate()
    figures = json.loads(text)
    ok = figures["status_codes"].get("202", 0)
    return float(ok / (figures["duration"] / 1e9))


async def run(args: argparse.Namespace, session: h.Session) -> dict[str, Any]:
    endpoints = h.Endpoints.load()
    vegeta = find_vegeta()
    session.log_dir.mkdir(parents=True, exist_ok=True)
    async with h.private_stack(endpoints, "bench.soak", args.partitions) as private:
        soak = Soak(args, private, session.log_dir, f"soak-{h.suffix()}")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        more = {"DISTCOUNT_HTTP_HOST": "127.0.0.1", "DISTCOUNT_HTTP_PORT": str(port)}
        soak.ingress = await h.spawn_service(
            "ingress", soak.env(**more), session.log_dir / "ingress.log"
        )
        for name in ("aggregator-a", "aggregator-b"):
            await soak.start_aggregator(name)
        conn = await asyncpg.connect(private.database.owner_url, timeout=10)
        try:
            await _wait_ready(url)
            targets = session.log_dir / "targets.json"
            write_targets(targets, f"{url}/increment", keys=args.keys, batch=0, count=200_000)
            peak_per_s = await peak(vegeta, targets, session.log_dir)
            rate = max(1.0, peak_per_s * args.share)
            h.say(f"peak {peak_per_s:,.0f} increments/s: soaking at {rate:,.0f}/s")
            # what the peak wrote is in the topic too: the soak's own records come after it
            before = sum((await end_offsets(endpoints.kafka_bootstrap, private.topic)).values())
            soak.began = time.monotonic()
            stop = asyncio.Event()
            tasks = [
                asyncio.ensure_future(sampler(soak, conn, stop)),
                asyncio.ensure_future(killer(soak, stop)),
            ]
            try:
                segments = max(1, round(args.minutes * 60 / SEGMENT_S))
                for index in range(segments):
                    load = Load("soak", rate, SEGMENT_S, 0, max_workers=4096)
                    started = time.monotonic() - soak.began
                    result, _ = await attack(
                        vegeta,
                        load,
                        targets,
                        SEGMENT_S,
                        session.log_dir / f"segment-{index}",
                        log=session.log_dir / "vegeta.log",
                    )
                    soak.segments.append(Segment(index, started, result))
                    h.say(
                        f"minute {index + 1}/{segments}: {result['answered_2xx']:,} answered "
                        f"202, p99 {result['latency_ms']['p99'] if result['latency_ms'] else 0:.1f}"
                        f" ms, outcomes {result['outcomes']}"
                    )
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            caught_up_s = await _caught_up(soak, conn, args.timeout_s)
            soak.samples.append(await sample(soak, conn))
            checks = await _checks(soak, conn)
        finally:
            await conn.close()
            for child in [*soak.aggregators.values(), soak.ingress]:
                await child.stop()
    return {
        "peak_per_s": peak_per_s,
        "records_before": before,
        "rate": rate,
        "caught_up_s": caught_up_s,
        "checks": checks,
        "kills": soak.kills,
        "samples": [asdict(s) for s in soak.samples],
        "segments": [asdict(s) for s in soak.segments],
    }


async def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the ingress at {url} was not ready within 60 s")


async def _caught_up(soak: Soak, conn: asyncpg.Connection, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        last = await sample(soak, conn)
        if last.lag == 0:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the aggregators had not caught up {timeout_s:.0f} s after the load")


async def _checks(soak: Soak, conn: asyncpg.Connection) -> dict[str, Any]:
    totals = int(await conn.fetchval("SELECT coalesce(sum(value), 0) FROM counter_totals"))
    events = int(await conn.fetchval("SELECT coalesce(sum(delta), 0) FROM counter_events"))
    stored = int(await conn.fetchval(_OFFSETS, soak.group, soak.private.topic))
    records = await settled_total(soak.private.endpoints.kafka_bootstrap, soak.private.topic)
    accepted = sum(s.result["answered_2xx"] for s in soak.segments)
    return {
        "records": records,
        "totals_sum": totals,
        "events_sum": events,
        "offsets_sum": stored,
        "answered_202": accepted,
        "exact": totals == events == stored == records and accepted <= records,
    }


def plots(data: dict[str, Any], out_dir: Path, stamp: str) -> list[str]:
    try:
        import matplotlib  # noqa: PLC0415 # the bench group's: the report goes on without it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return []
    samples = data["samples"]
    minutes = [s["at_s"] / 60 for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name in sorted({n for s in samples for n in s["rss_mb"]}):
        top.plot(minutes, [s["rss_mb"].get(name, float("nan")) for s in samples], label=name)
    top.set_ylabel("RSS, MB")
    top.legend()
    bottom.plot(minutes, [s["lag"] for s in samples], color="tab:red")
    for kill in data["kills"]:
        for axis in (top, bottom):
            axis.axvline(kill["at_s"] / 60, color="grey", linestyle=":", linewidth=0.8)
    bottom.set_ylabel("lag, records")
    bottom.set_xlabel("minutes (dotted: an aggregator killed)")
    figure.tight_layout()
    path = out_dir / f"soak-{stamp}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path.name]


def report(session: h.Session, args: argparse.Namespace, data: dict[str, Any]) -> int:
    checks = data["checks"]
    samples = data["samples"]
    first, last = samples[0], samples[-1]
    rows = []
    by_minute: dict[int, dict[str, Any]] = {}
    for s in samples:
        by_minute.setdefault(int(s["at_s"] // 60), s)
    for minute, s in sorted(by_minute.items()):
        segment = next((g for g in data["segments"] if g["index"] == minute), None)
        result = segment["result"] if segment else None
        p99 = result["latency_ms"]["p99"] if result and result["latency_ms"] else None
        rows.append(
            [
                minute,
                *(f"{s['rss_mb'].get(n, float('nan')):.0f}" for n in sorted(s["rss_mb"])),
                f"{s['lag']:,}",
                f"{result['answered_2xx']:,}" if result else "",
                h.fmt(p99, 1),
                ", ".join(f"{k} {v:,}" for k, v in result["outcomes"].items()) if result else "",
            ]
        )
    names = sorted(first["rss_mb"])
    before = data.get("records_before", first["records"])
    unanswered = sum(
        n for g in data["segments"] for o, n in g["result"]["outcomes"].items() if o != "202"
    )
    pictures = plots(data, session_dir(), session.stamp)
    md = [
        session.heading(),
        "",
        f"Machine: {h.machine_line(session.machine)}; the broker, PostgreSQL, the services and "
        "vegeta share these cores.",
        "",
        f"One ingress and two aggregators (flush every {args.flush_interval_ms} ms) on a private "
        f"topic of {args.partitions} partitions; single increments over {args.keys:,} keys. "
        f"Peak (vegeta, 64 workers, {PEAK_S} s): {data['peak_per_s']:,.0f} increments/s; soak "
        f"at {data['rate']:,.0f}/s ({args.share:.0%}) for {args.minutes} minutes, one "
        f"aggregator SIGKILLed every {args.kill_every_s:.0f} s in turn and started again "
        f"{args.restart_after_s:.0f} s later ({len(data['kills'])} kills).",
        "",
        h.table(
            ["minute", *(f"RSS {n} MB" for n in names), "lag", "202s", "p99 ms", "answers"],
            rows,
        ),
        "",
        "RSS from first to last sample: "
        + ", ".join(
            f"{n} {first['rss_mb'][n]:.0f} -> {last['rss_mb'].get(n, float('nan')):.0f} MB"
            for n in names
        )
        + f". Lag at most {max(s['lag'] for s in samples):,} records; caught up "
        f"{data['caught_up_s']:.1f} s after the load stopped.",
        "",
        f"**Exactness: {checks['records']:,} records in the topic, totals {checks['totals_sum']:,},"
        f" event log {checks['events_sum']:,}, stored offsets {checks['offsets_sum']:,}; "
        f"{checks['answered_202']:,} answered 202: "
        f"{'every record counted once' if checks['exact'] else 'NOT EXACT'}.**",
        "",
        f"Of the records, {before:,} were written by the peak run before the soak; the soak's "
        f"{unanswered:,} requests without a 202 (no answer, or another status) account for "
        f"{checks['records'] - before - checks['answered_202']:,} more records (a request "
        "that gets no answer may still have been written).",
        *(f"\n![soak]({p})" for p in pictures),
    ]
    verdict = "PASS" if checks["exact"] else "FAIL"
    payload = {**session.meta(settings=vars(args)), **data, "summary": {"verdict": verdict}}
    return session.finish(payload, "\n".join(md))


def session_dir() -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("soak", "Soak")
    data = await run(args, session)
    return report(session, args, data)


def main() -> None:
    parser = h.parser("The pipeline for a long time at half its peak.", repeat=1, repeat_help="-")
    add = parser.add_argument
    add("--minutes", type=float, default=30, help="how long the load runs")
    add("--share", type=float, default=0.5, help="share of the measured peak to load at")
    add("--kill-every-s", type=float, default=300, help="an aggregator killed this often")
    add("--restart-after-s", type=float, default=5, help="and started again after this long")
    add("--sample-s", type=float, default=10, help="how often RSS and lag are sampled")
    add("--keys", type=int, default=10_000, help="distinct counter keys")
    add("--partitions", type=int, default=6, help="partitions of the topic")
    add("--flush-interval-ms", type=int, default=1000, help="DISTCOUNT_FLUSH_INTERVAL_MS")
    add("--timeout-s", type=float, default=600, help="how long the aggregators may take after")
    args = parser.parse_args()
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
