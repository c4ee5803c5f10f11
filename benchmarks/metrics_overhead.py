"""What the metrics cost on the two hot paths (benchmarks/_hotpaths.py): metrics off against
metrics on, in one process, in the same run, interleaved.

"off" is `DISTCOUNT_METRICS=off`; "on" is the reporter chosen (DogStatsD by default, the costliest:
tags on every line) sending every `--interval-ms` to a UDP port on 127.0.0.1 read by a child
process, which also checks that what was sent adds up. Both sides build their hooks from settings
read by `distcount_config.load`.

R rounds per path, each an "off" run and an "on" run, each cut into C chunks run alternately
(off 1, on 1, on 2, off 2, off 3, on 3, ...; on first in even rounds), as this machine's speed
drifts by tens of percent within seconds. A round where other processes took CPU is run again.
Each chunk runs inside its own `metrics.reporting()`, so its ticks and last report are paid
inside it. Headline per path: the median over all chunk pairs of 1 - (off time / on time);
limit 5 %. `--null-test` runs metrics off on both sides: the method's own noise and bias.

    .venv/bin/python benchmarks/metrics_overhead.py [--repeat 7] [--requests 150000]
        [--records 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import harness as h
from _hotpaths import FoldPath, IngressPath, Records, Requests
from _overhead_report import report
from distcount_aggregator import MAX_RECORDS_PER_FETCH
from distcount_config import Settings, load
from distcount_ingress import collect_garbage_rarely
from distcount_metrics import CATALOG

PATHS = ("ingress", "fold")
METRIC = {metric.name: metric for metric in CATALOG}
PACKAGES = ("uvloop", "starlette", "aiokafka", "orjson", "statsd")


def settings_for(side: str, args: argparse.Namespace, port: int) -> Settings:
    """The settings `distcount_config.load` reads from these variables (and no others)."""
    return load(
        {
            "DISTCOUNT_METRICS": "off" if side == "off" or args.null_test else args.reporter,
            "DISTCOUNT_STATSD_HOST": "127.0.0.1",
            "DISTCOUNT_STATSD_PORT": str(port),
            "DISTCOUNT_METRICS_INTERVAL_MS": str(args.interval_ms),
            "DISTCOUNT_METRICS_SAMPLE_RATE": str(args.sample_rate),
            "DISTCOUNT_METRICS_TAGS": args.tags,
            "DISTCOUNT_BUCKET_MS": str(args.bucket_ms),
        }
    )


@dataclass
class RunResult:
    """One side of one round: its chunks' figures added up."""

    path: str
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
    counted: bool = True  # False: its round was disturbed and run again

    @property
    def disturbed(self) -> bool:
        return self.others_during is not None and self.others_during >= h.QUIET_BELOW

    @property
    def rate(self) -> float:
        return self.units / self.wall_s

    @property
    def cpu_rate(self) -> float:
        return self.units / self.cpu_s if self.cpu_s > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        extra = {"per_s": self.rate, "per_cpu_s": self.cpu_rate, "disturbed": self.disturbed}
        return {**asdict(self), **extra}


class SideRun:
    """One side of one round: its hooks built afresh, then run one chunk at a time. What the
    drain received is taken after each chunk, outside its time."""

    def __init__(
        self, side: str, args: argparse.Namespace, drain: h.StatsdDrain, work: Requests | Records
    ) -> None:
        self.side, self.drain = side, drain
        self.settings = settings_for(side, args, drain.port)
        self.work: IngressPath | FoldPath
        if isinstance(work, Requests):
            self.path, self.units, self.total = "ingress", args.requests, args.requests
            self.work = IngressPath(self.settings, work, args.concurrency)
        else:
            self.path, self.units, self.total = "fold", args.records, len(work.fetches)
            self.work = FoldPath(self.settings, work, args.flush_every)
        self.meter = h.Meter(drain.cpu_seconds)
        self.sent: dict[str, Any] = {}

    async def chunk(self, k: int, chunks: int) -> None:
        with self.meter.measure():
            async with self.work.metrics.reporting():
                await self.work.run(h.share(self.total, k, chunks))
        h.add_tally(self.sent, await self.drain.take())

    def checks(self) -> dict[str, Any]:
        sends = self.settings.metrics.reporter != "off"
        timers = self.sent.get("timer_lines", {})
        checks: dict[str, Any]
        if isinstance(self.work, IngressPath):
            ok = self.work.correct(self.units)
            checks = {
                "statuses": {str(k): v for k, v in sorted(self.work.statuses.items())},
                "published": self.work.publisher.published,
            }
            if sends:
                requests = h.counted(self.sent, METRIC["ingress.requests"], ("increment", 202))
                checks["requests_counted"] = requests
                for name in ("request_duration", "produce_duration"):
                    full = METRIC[f"ingress.{name.replace('_', '.')}"].full_name
                    checks[f"{name}_lines"] = timers.get(full, 0)
                ok = ok and requests == self.units
        else:
            ok = self.work.correct()
            checks = {
                "folded": self.work.folded,
                "rejected": self.work.rejected,
                "flushes": self.work.flushes,
            }
            if sends:
                records = h.counted(self.sent, METRIC["aggregator.records_in"])
                checks["records_counted"] = records
                checks["delay_lines"] = timers.get(METRIC["aggregator.delay"].full_name, 0)
                ok = ok and records == self.units
        if not sends and self.sent.get("datagrams"):
            ok = False  # metrics off sent something
        # every report carries the process's memory gauge: the ticks, plus one per chunk's end
        reports = self.sent.get("gauge_lines", {}).get(METRIC["process.memory_rss"].full_name, 0)
        sent = {name: self.sent.get(name, 0) for name in ("datagrams", "bytes", "lines")}
        return {**checks, "correct": ok, **sent, "reports": reports}

    def result(self, index: int, chunks: int, before: float | None) -> RunResult:
        m = self.meter
        return RunResult(
            path=self.path,
            side=self.side,
            index=index,
            units=self.units,
            chunks=chunks,
            wall_s=m.wall_s,
            cpu_s=m.cpu_s,
            busy_during=m.busy,
            others_during=m.others,
            background_busy=before,
            checks=self.checks(),
            chunk_wall_s=m.chunk_wall_s,
        )


async def run_round(
    index: int, args: argparse.Namespace, drain: h.StatsdDrain, work: Requests | Records
) -> list[RunResult]:
    """Each side's hooks built afresh, then its run cut into chunks, run alternately with the
    other side's, so that both meet the same moments of a machine whose speed drifts.

    The order is off-on, on-off, off-on... (on-off first in even rounds): each side runs second
    in half the chunks, where it finds the records the other side has just read still in the
    CPU's caches, and a round starts with each side in turn."""
    before = await h.background_busy(args.wait_quiet_s)
    gc.collect()
    order = h.side_order(("off", "on"), index, alternate=True)
    # after a second of idling the first chunk would run slow: one chunk a side, thrown away,
    # gets the machine going again
    for side in order:
        await SideRun(side, args, drain, work).chunk(0, args.chunks)
    await drain.take()
    sides = [SideRun(side, args, drain, work) for side in order]
    for k in range(args.chunks):
        for run_ in sides if k % 2 == 0 else sides[::-1]:
            await run_.chunk(k, args.chunks)
    pair = [s.result(index, args.chunks, before) for s in sorted(sides, key=lambda s: s.side)]
    for r in pair:
        h.say(
            f"{r.path} round {index} {r.side:>3}: {r.rate:,.0f}/s ({r.wall_s:.3f} s wall, "
            f"{r.cpu_s:.3f} s CPU, others {h.pct(r.others_during)}, {r.checks['datagrams']} "
            f"datagrams{'' if r.checks['correct'] else ', CHECK FAILED'})"
        )
    return pair


def _set_aside(pair: list[RunResult]) -> bool:
    if not any(r.disturbed for r in pair):
        return False
    for r in pair:
        r.counted = False
    return True


async def measure_path(
    path: str, args: argparse.Namespace, drain: h.StatsdDrain
) -> h.Rounds[RunResult]:
    """Rounds until `--repeat` of them are counted (a disturbed one is run again)."""
    work: Requests | Records
    guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if path == "ingress":
        work = Requests.build(args.ingress_keys)
        guard = collect_garbage_rarely()
    else:
        h.say(f"building {args.records:,} consumer records")
        work = Records.build(args.records, args.fold_keys, args.partitions, args.spread_ms)
        gc.collect()
        gc.freeze()  # the records outlive every run: out of the collector's way

    async def round_(index: int) -> AsyncIterator[RunResult]:
        for result in await run_round(index, args, drain, work):
            yield result

    try:
        with guard:
            return await h.Rounds[RunResult]().play(
                args.repeat, round_, disturbed=_set_aside, max_extra=args.max_extra
            )
    finally:
        if path == "fold":
            del work
            gc.unfreeze()


async def bench(args: argparse.Namespace) -> int:
    null = " (null test: off against off)" if args.null_test else ""
    session = h.Session.start("metrics_overhead", f"Metrics overhead{null}", PACKAGES)
    paths = PATHS if args.path == "both" else (args.path,)
    h.say(
        f"metrics overhead: paths {', '.join(paths)}; {args.repeat} rounds; reporter "
        f"{args.reporter} every {args.interval_ms} ms, sample rate {args.sample_rate}"
    )
    runs: list[RunResult] = []
    error: str | None = None
    drain = await h.StatsdDrain.start()
    h.say(f"datagram drain listening on 127.0.0.1:{drain.port} (pid {drain.process.pid})")
    try:
        for path in paths:
            rounds = await measure_path(path, args, drain)
            runs += rounds.results
            if rounds.error:
                error = rounds.error
                break
    except Exception as exc:  # report what was measured, and why the rest was not
        error = h.describe(exc)
        h.say(f"stopped early: {exc}")
    finally:
        await drain.stop()
    workload = {k: v for k, v in vars(args).items() if k not in ("path", "wait_quiet_s")}
    workload |= {"disturbed_at_others": h.QUIET_BELOW, "fetch_records": MAX_RECORDS_PER_FETCH}
    meta = session.meta(paths=list(paths), versions=session.machine["versions"], workload=workload)
    return report(session, meta, runs, error)


def main() -> None:
    parser = h.parser(
        "What distcount's metrics cost on the ingress's request and the aggregator's fold: "
        "off against on, interleaved, in one process.",
        repeat=7,
        repeat_help="rounds (an off and an on run)",
    )
    add = parser.add_argument
    add("--path", choices=(*PATHS, "both"), default="both", help="what to run")
    add("--requests", type=int, default=150_000, help="ingress requests per run")
    add("--ingress-keys", type=int, default=1000, help="distinct keys of the ingress requests")
    add("--concurrency", type=int, default=64, help="coroutines sending ingress requests")
    add("--records", type=int, default=1_000_000, help="records folded per run")
    add("--fold-keys", type=int, default=10_000, help="distinct keys folded")
    add("--partitions", type=int, default=6, help="partitions the records are in")
    add("--spread-ms", type=int, default=5000, help="record timestamps spread over this many ms")
    add("--bucket-ms", type=int, default=1000, help="the fold's buckets (DISTCOUNT_BUCKET_MS)")
    add("--flush-every", type=int, default=20, help="fetches between two simulated flushes")
    add("--reporter", choices=("dogstatsd", "statsd"), default="dogstatsd", help='"on" reporter')
    add("--interval-ms", type=int, default=1000, help="DISTCOUNT_METRICS_INTERVAL_MS when on")
    add("--sample-rate", type=float, default=0.01, help="DISTCOUNT_METRICS_SAMPLE_RATE when on")
    add("--tags", default="env:bench,region:local", help="DISTCOUNT_METRICS_TAGS when on")
    add("--null-test", action="store_true", help='the "on" side with metrics off too')
    add("--chunks", type=int, default=5, help="chunks per run, alternating with the other side")
    add("--max-extra", type=int, default=7, help="disturbed rounds run again, at most, per path")
    args = parser.parse_args()
    h.at_least(parser, args, 1, "--repeat", "--requests", "--records", "--flush-every")
    h.at_least(parser, args, 1, "--concurrency", "--ingress-keys", "--fold-keys")
    h.at_least(parser, args, 1, "--partitions", "--spread-ms", "--chunks")
    h.at_least(parser, args, 0, "--max-extra")
    if args.chunks > min(args.requests, -(-args.records // MAX_RECORDS_PER_FETCH)):
        parser.error("--chunks: at most one a request and one a fetch of records")
    h.run(lambda: bench(args), on_uvloop=True)


if __name__ == "__main__":
    main()
