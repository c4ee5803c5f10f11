"""The ingress against a bare Starlette endpoint, same uvicorn settings, same load, same run.

R times, interleaved, bare first, each server started afresh on a port of its own, waited for
(GET /health/ready = 200), warmed up, then loaded by the same wrk command:

- bare: benchmarks/bare_app.py, `POST /increment` answering 202 without Kafka.
- ours: `distcount ingress` producing to a fresh topic, with a fresh, migrated database for its
  readiness check, as the services' role; the records the topic gained are checked against the
  2xx answers wrk saw.

Headline: median requests/s of ours / median requests/s of bare; floor 0.5.

    .venv/bin/python benchmarks/ingress.py [--duration 10] [--connections 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import harness as h

FLOOR = h.Limit(0.5, floor=True)
SIDES = ("bare", "ours")


def wrk_arguments(description: str, repeat: int) -> argparse.Namespace:
    """The command line of a benchmark of the ingress under wrk (this one's and
    metrics_e2e.py's), checked; exits if wrk is missing."""
    parser = h.parser(description, repeat=repeat, repeat_help="runs per side, interleaved")
    h.add_wrk_options(parser)
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topic")
    args = parser.parse_args()
    h.at_least(parser, args, 1, "--threads", "--connections", "--duration", "--repeat", "--keys")
    h.check_wrk_options(parser, args)
    return args


async def run_bare(index: int, wrk: h.Wrk, log_dir: Path) -> h.LoadResult:
    async def spawn(port: int) -> h.Child:
        argv = [h.PYTHON, str(h.BENCH_DIR / "bare_app.py"), "--port", str(port)]
        return await h.Child.spawn(
            "bare app", argv, h.child_env({}), log_dir / f"run{index}-bare.log"
        )

    return await h.serve_and_load("bare", index, spawn, wrk)


def _ms(value: float) -> str:
    return f"{value / 1000:.2f}"


def _check_cell(r: h.LoadResult) -> str:
    c = r.records_check
    if c is None:
        return "n/a"
    return (
        f"{'ok' if c['consistent'] else 'MISMATCH'}: +{c['records_added']:,} records, "
        f"{c['extra_records']:+,} vs 2xx"
    )


def report(session: h.Session, meta: dict[str, Any], rounds: h.Rounds[h.LoadResult]) -> int:
    runs, error = rounds.results, rounds.error
    groups = h.by_side(runs, SIDES)
    if not all(groups.values()):
        lines = [f"- run {r.index} {r.side}: {r.requests_per_s:,.0f} requests/s" for r in runs]
        return session.failed(meta, [r.as_dict() for r in runs], lines, error or "no runs")
    rps = {side: h.median([r.requests_per_s for r in group]) for side, group in groups.items()}
    ratio = rps["ours"] / rps["bare"]
    consistent = all(r.consistent for r in groups["ours"])
    clean = all(r.non_2xx == 0 and r.socket_errors == 0 for r in runs)
    lat = {
        side: {q: h.median([r.latency_us[q] / 1000 for r in group]) for q in ("p50", "p90", "p99")}
        for side, group in groups.items()
    }
    summary: dict[str, Any] = {
        "median_requests_per_s": rps,
        "ratio": ratio,
        "floor": FLOOR.value,
        "verdict": h.verdict(FLOOR.passes(ratio) and consistent, error),
        "error": error,
        "records_match_2xx": consistent,
        "no_errors": clean,
        "median_latency_ms": lat,
    }
    w = meta["load"]
    rows = [
        [
            *(r.index, r.side, f"{r.requests_per_s:,.0f}", r.requests, r.non_2xx),
            *(r.socket_errors, *(_ms(r.latency_us[q]) for q in ("p50", "p90", "p99"))),
            h.fmt(r.server_cpu_s),
            h.fmt(r.server_cpu_us_per_request, 0),
            f"{r.wrk_cpu_s:.2f}",
            *(h.pct(r.background_busy), h.pct(r.machine_busy), _check_cell(r)),
        ]
        for r in runs
    ]
    md = [
        session.heading(),
        "",
        f"Machine: **{h.machine_line(session.machine)}**. wrk, the server under test, the Kafka "
        "broker and PostgreSQL all share these cores, so the figures are the stack's throughput "
        "on this box, not the server's alone.",
        "",
        f"Load: `wrk -t{w['threads']} -c{w['connections']} -d{w['duration_s']}s "
        f"--timeout={w['wrk_timeout_s']}s --latency` (after a {w['warmup_s']} s warm-up), "
        f'POST /increment with `{{"key": "k<1..{w["keys"]}>", "value": 1}}` (random key per '
        f"request), {w['repeat']} runs per side, interleaved, each server started afresh. Both "
        "servers: uvicorn, uvloop, httptools, one worker, no access log.",
        "",
        "bare = benchmarks/bare_app.py (reads the body, orjson-parses it, echoes it as "
        '`{"data": ...}` with 202; no validation, no Kafka). ours = `distcount ingress` '
        f"producing to a fresh topic of {meta['partitions']} partitions (acks=all, idempotent; "
        "202 only after the broker's acknowledgement).",
        "",
        h.table(
            [
                *("run", "side", "requests/s", "requests", "non-2xx", "socket errors"),
                *("p50 ms", "p90 ms", "p99 ms", "server CPU s", "server CPU µs/request"),
                *("wrk CPU s", "busy before", "busy during", "records in topic vs 2xx"),
            ],
            rows,
        ),
        "",
        h.table(
            ["", "bare (Starlette, 202, no Kafka)", "ours (distcount ingress)", "ratio"],
            [
                ["median requests/s", f"{rps['bare']:,.0f}", f"{rps['ours']:,.0f}", f"{ratio:.3f}"],
                *(
                    [f"median {q} ms", f"{lat['bare'][q]:.2f}", f"{lat['ours'][q]:.2f}", ""]
                    for q in ("p50", "p99")
                ),
            ],
        ),
        "",
        f"**Headline: ours / bare = {ratio:.3f} (ratio of median requests/s); {FLOOR}: "
        f"{summary['verdict']}**"
        + ("" if consistent else " (records in the topic did not match the 2xx answers)"),
        *h.error_lines(error),
        "",
        "Records check: the topic's end offsets are read once they have settled before and "
        "after the measured run; `extra` = records added - 2xx answers, which may be above 0 by "
        "at most the number of connections (requests in flight when wrk stopped are produced "
        "but never counted by wrk) plus the non-2xx answers (a 503 may come for a record the "
        "broker still writes), and must never be below 0 (a 202 without its record). "
        "Busy before / during = the whole machine's CPU use in the second before the server "
        "was started / during the measured load."
        + ("" if clean else " Some runs had non-2xx answers or socket errors: see the table."),
    ]
    data = {**meta, "runs": [r.as_dict() for r in runs], "summary": summary}
    return session.finish(data, "\n".join(md))


async def bench(args: argparse.Namespace) -> int:
    session = h.Session.start("ingress", "Ingress benchmark")
    wrk = h.Wrk.from_args(args, session.log_dir)
    endpoints = h.Endpoints.load()
    h.say(
        f"ingress benchmark: nproc {session.machine['nproc']}; {wrk.describe()}, {args.repeat} "
        f"runs per side; {endpoints.describe()}"
    )
    rounds: h.Rounds[h.LoadResult] = h.Rounds()
    async with h.private_stack(endpoints, "bench.ingress", args.partitions) as private:
        pg = await h.postgres_facts(private.database.owner_url)

        async def round_(index: int) -> AsyncIterator[h.LoadResult]:
            yield await run_bare(index, wrk, session.log_dir)
            yield await h.load_ingress("ours", index, private, wrk, session.log_dir)

        await rounds.play(args.repeat, round_)
    meta = session.meta(
        kafka_bootstrap=endpoints.kafka_bootstrap,
        postgres=pg,
        partitions=args.partitions,
        load={**wrk.settings(), "repeat": args.repeat},
        lua_script=str(wrk.script),
        logs=str(session.log_dir),
    )
    return report(session, meta, rounds)


def main() -> None:
    args = wrk_arguments(
        "distcount's ingress against a bare Starlette endpoint, loaded by wrk.", repeat=3
    )
    h.run(lambda: bench(args))


if __name__ == "__main__":
    main()
