"""The ingress's whole request path with metrics off against metrics on: the real
`distcount ingress` process (uvicorn, the Kafka producer, a real broker) loaded by wrk, the two
settings alternating run by run, each server started afresh.

"on" is DogStatsD (tags on every line, the costliest dialect) at the services' default interval
and sample rate, sending to a UDP socket this script holds open; "off" is DISTCOUNT_METRICS=off.
The headline is 1 - median(on) / median(off) of requests/s; the limit is 5 %. The server's CPU
time per request is reported beside it: it moves less than the throughput when the machine's
speed drifts.

    .venv/bin/python benchmarks/metrics_e2e.py [--repeat 5] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

from _common import (
    RESULTS_DIR,
    Endpoints,
    error_lines,
    fresh_database,
    fresh_topic,
    machine_facts,
    markdown_table,
    median,
    say,
    utc_stamp,
    write_report,
)
from ingress import LUA, LoadResult, load_arguments, run_ours

LIMIT_PCT = 5.0
SIDES = ("metrics off", "metrics on")


def _settings(side: str, statsd_port: int) -> dict[str, str]:
    if side == "metrics off":
        return {"DISTCOUNT_METRICS": "off"}
    return {
        "DISTCOUNT_METRICS": "dogstatsd",
        "DISTCOUNT_STATSD_HOST": "127.0.0.1",
        "DISTCOUNT_STATSD_PORT": str(statsd_port),
        "DISTCOUNT_METRICS_TAGS": "env:bench",
    }


def _cpu_us(run: LoadResult) -> float | None:
    return None if run.server_cpu_s is None else run.server_cpu_s / run.requests * 1e6


def build_report(
    meta: dict[str, Any], runs: list[LoadResult], error: str | None
) -> tuple[dict[str, Any], str]:
    by_side = {side: [r for r in runs if r.side == side] for side in SIDES}
    rps = {side: median([r.requests_per_s for r in group]) for side, group in by_side.items()}
    cpu = {
        side: median([c for r in group if (c := _cpu_us(r)) is not None])
        for side, group in by_side.items()
    }
    overhead = (1 - rps["metrics on"] / rps["metrics off"]) * 100
    cpu_overhead = (cpu["metrics on"] / cpu["metrics off"] - 1) * 100
    consistent = all(r.records_check and r.records_check["consistent"] for r in runs)
    verdict = "ERROR" if error else "PASS" if overhead <= LIMIT_PCT and consistent else "FAIL"
    summary = {
        "median_requests_per_s": rps,
        "median_server_cpu_us_per_request": cpu,
        "overhead_pct": overhead,
        "cpu_per_request_overhead_pct": cpu_overhead,
        "limit_pct": LIMIT_PCT,
        "records_match_2xx": consistent,
        "verdict": verdict,
        "error": error,
    }
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    m, w = meta["machine"], meta["load"]
    rows = [
        [
            r.index,
            r.side,
            f"{r.requests_per_s:,.0f}",
            f"{c:.0f}" if (c := _cpu_us(r)) is not None else "-",
            f"{r.latency_us['p50'] / 1000:.2f}",
            f"{r.latency_us['p99'] / 1000:.2f}",
            r.non_2xx,
            "ok" if r.records_check and r.records_check["consistent"] else "MISMATCH",
        ]
        for r in runs
    ]
    md = [
        f"# Metrics overhead on the whole request path, {meta['stamp']}",
        "",
        f"Machine: nproc {m['nproc']} ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}; wrk, the ingress, the Kafka broker and PostgreSQL share these cores. "
        f"`wrk -t{w['threads']} -c{w['connections']} -d{w['duration_s']}s` after a "
        f"{w['warmup_s']} s warm-up, {w['repeat']} runs per side, alternating.",
        "",
        markdown_table(
            [
                "run",
                "side",
                "requests/s",
                "server CPU µs/request",
                "p50 ms",
                "p99 ms",
                "non-2xx",
                "records vs 2xx",
            ],
            rows,
        ),
        "",
        markdown_table(
            ["", "metrics off", "metrics on", "overhead"],
            [
                [
                    "median requests/s",
                    f"{rps['metrics off']:,.0f}",
                    f"{rps['metrics on']:,.0f}",
                    f"{overhead:+.2f} %",
                ],
                [
                    "median server CPU µs/request",
                    f"{cpu['metrics off']:.0f}",
                    f"{cpu['metrics on']:.0f}",
                    f"{cpu_overhead:+.2f} %",
                ],
            ],
        ),
        "",
        f"**Headline: metrics on cost {overhead:.2f} % of the requests/s (limit "
        f"{LIMIT_PCT:g} %): {verdict}**",
        *error_lines(error),
    ]
    return data, "\n".join(md)


async def bench(args: argparse.Namespace) -> int:
    endpoints = Endpoints.from_env()
    stamp = utc_stamp()
    log_dir = RESULTS_DIR / "logs" / f"metrics-e2e-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    script = log_dir / "increment.lua"
    script.write_text(LUA.replace("KEYS", str(args.keys)), encoding="utf-8")
    # where "on" sends: held open and never read, so the kernel drops what overflows
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    statsd_port = sink.getsockname()[1]
    runs: list[LoadResult] = []
    error: str | None = None
    async with (
        fresh_topic(endpoints.kafka_bootstrap, "bench.metrics", args.partitions) as topic,
        fresh_database(endpoints, "bench_met") as database_url,
    ):
        try:
            for index in range(1, args.repeat + 1):
                order = SIDES if index % 2 else SIDES[::-1]
                for side in order:
                    runs.append(
                        await run_ours(
                            index,
                            endpoints,
                            database_url=database_url,
                            topic=topic,
                            script=script,
                            args=args,
                            log_dir=log_dir,
                            side=side,
                            settings=_settings(side, statsd_port),
                        )
                    )
        except Exception as exc:  # report what was measured, and why the rest was not
            error = f"{type(exc).__name__}: {exc}"
            say(f"stopped early: {exc}")
        finally:
            sink.close()
    meta = {
        "benchmark": "metrics_e2e",
        "stamp": stamp,
        "machine": machine_facts(),
        "partitions": args.partitions,
        "load": {
            "tool": "wrk",
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "keys": args.keys,
            "repeat": args.repeat,
        },
    }
    if not all(any(r.side == side for r in runs) for side in SIDES):
        say(f"no complete round: {error}")
        return 2
    data, markdown = build_report(meta, runs, error)
    write_report("metrics_e2e", stamp, data, markdown)
    print(markdown)
    verdict = data["summary"]["verdict"]
    return 0 if verdict == "PASS" else 1 if verdict == "FAIL" else 2


def main() -> None:
    args = load_arguments(
        "The ingress's request path (uvicorn, Kafka) with metrics off and on.", repeat=5
    )
    raise SystemExit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
