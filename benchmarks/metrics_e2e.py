"""The ingress's whole request path with metrics off against metrics on: the real
`distcount ingress` (uvicorn, the Kafka producer, a real broker) loaded by wrk as
benchmarks/ingress.py loads it, the two settings alternating run by run, each server afresh.

"on" is DogStatsD (tags on every line, the costliest dialect) at the services' default interval
and sample rate, sending to a UDP socket this script holds open; "off" is DISTCOUNT_METRICS=off.
Headline: 1 - median(on) / median(off) of requests/s; limit 5 %. The server's CPU time per
request is reported beside it: it moves less than the throughput when the machine's speed drifts.

    .venv/bin/python benchmarks/metrics_e2e.py [--repeat 5] [--duration 10]
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator
from typing import Any

import harness as h
from ingress import wrk_arguments

LIMIT = h.Limit(5.0, floor=False, unit=" %")
SIDES = ("metrics off", "metrics on")


def side_settings(side: str, statsd_port: int) -> dict[str, str]:
    if side == "metrics off":
        return {"DISTCOUNT_METRICS": "off"}
    return {
        "DISTCOUNT_METRICS": "dogstatsd",
        "DISTCOUNT_STATSD_HOST": "127.0.0.1",
        "DISTCOUNT_STATSD_PORT": str(statsd_port),
        "DISTCOUNT_METRICS_TAGS": "env:bench",
    }


def report(session: h.Session, meta: dict[str, Any], rounds: h.Rounds[h.LoadResult]) -> int:
    runs, error = rounds.results, rounds.error
    groups = h.by_side(runs, SIDES)
    if not all(groups.values()):
        lines = [f"- run {r.index} {r.side}: {r.requests_per_s:,.0f} requests/s" for r in runs]
        return session.failed(meta, [r.as_dict() for r in runs], lines, error or "no runs")
    rps = {side: h.median([r.requests_per_s for r in group]) for side, group in groups.items()}
    cpu = {
        side: h.median([c for r in group if (c := r.server_cpu_us_per_request) is not None])
        for side, group in groups.items()
    }
    overhead = (1 - rps["metrics on"] / rps["metrics off"]) * 100
    cpu_overhead = (cpu["metrics on"] / cpu["metrics off"] - 1) * 100
    consistent = all(r.consistent for r in runs)
    summary = {
        "median_requests_per_s": rps,
        "median_server_cpu_us_per_request": cpu,
        "overhead_pct": overhead,
        "cpu_per_request_overhead_pct": cpu_overhead,
        "limit_pct": LIMIT.value,
        "records_match_2xx": consistent,
        "verdict": h.verdict(LIMIT.passes(overhead) and consistent, error),
        "error": error,
    }
    w = meta["load"]
    rows = [
        [
            *(r.index, r.side, f"{r.requests_per_s:,.0f}", h.fmt(r.server_cpu_us_per_request, 0)),
            *(f"{r.latency_us[q] / 1000:.2f}" for q in ("p50", "p99")),
            r.non_2xx,
            "ok" if r.consistent else "MISMATCH",
        ]
        for r in runs
    ]
    md = [
        session.heading(),
        "",
        f"Machine: {h.machine_line(session.machine)}; wrk, the ingress, the Kafka broker and "
        f"PostgreSQL share these cores. `wrk -t{w['threads']} -c{w['connections']} "
        f"-d{w['duration_s']}s` after a {w['warmup_s']} s warm-up, {w['repeat']} runs per side, "
        "alternating.",
        "",
        h.table(
            [
                *("run", "side", "requests/s", "server CPU µs/request", "p50 ms", "p99 ms"),
                *("non-2xx", "records vs 2xx"),
            ],
            rows,
        ),
        "",
        h.table(
            ["", *SIDES, "overhead"],
            [
                ["median requests/s", *(f"{rps[s]:,.0f}" for s in SIDES), f"{overhead:+.2f} %"],
                [
                    "median server CPU µs/request",
                    *(f"{cpu[s]:.0f}" for s in SIDES),
                    f"{cpu_overhead:+.2f} %",
                ],
            ],
        ),
        "",
        f"**Headline: metrics on cost {overhead:.2f} % of the requests/s ({LIMIT}): "
        f"{summary['verdict']}**",
        *h.error_lines(error),
    ]
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("metrics_e2e", "Metrics overhead on the whole request path")
    wrk = h.Wrk.from_args(args, session.log_dir)
    endpoints = h.Endpoints.load()
    h.say(f"metrics e2e: {wrk.describe()}, {args.repeat} runs per side; {endpoints.describe()}")
    # where "on" sends: held open and never read, so the kernel drops what overflows
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    rounds: h.Rounds[h.LoadResult] = h.Rounds()
    try:
        async with h.private_stack(endpoints, "bench.metrics", args.partitions) as private:

            async def round_(index: int) -> AsyncIterator[h.LoadResult]:
                for side in h.side_order(SIDES, index, alternate=True):
                    settings = side_settings(side, sink.getsockname()[1])
                    yield await h.load_ingress(
                        side, index, private, wrk, session.log_dir, settings=settings
                    )

            await rounds.play(args.repeat, round_)
    finally:
        sink.close()
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        partitions=args.partitions,
        load={**wrk.settings(), "repeat": args.repeat},
        logs=str(session.log_dir),
    )
    return report(session, meta, rounds)


def main() -> None:
    args = wrk_arguments(
        "The ingress's request path (uvicorn, Kafka) with metrics off and on.", repeat=5
    )
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
